extension Pipeline {
    /// A request's mask blur and mask crop done before the generation: the request the stages run
    /// (its mask blurred; with a crop, the init image and mask cropped and resized to the output
    /// size) and, with a crop, the overlay that lays its images back into the init image, as
    /// diffusers' inpainting pipelines do with a blurred mask and `padding_mask_crop`.
    func preparedMask(_ request: GenerationRequest) throws -> (request: GenerationRequest, overlay: MaskOverlay?) {
        guard request.maskBlur != 0 || request.maskCrop != nil else { return (request, nil) }
        func invalid(_ s: String) -> GenerationError { .invalidRequest(s) }
        let maxSide = GenerationRequest.maxSide
        guard request.maskBlur.isFinite, request.maskBlur >= 0, request.maskBlur <= Float(maxSide) else {
            throw invalid("mask blur \(request.maskBlur): expected 0…\(maxSide) pixels (the blur's standard deviation)")
        }
        if let padding = request.maskCrop, !(0...maxSide).contains(padding) {
            throw invalid("mask crop \(padding): expected a padding of 0…\(maxSide) pixels")
        }
        guard let mask = request.mask else {
            throw invalid("mask blur and mask crop need a mask (and an init image)")
        }
        guard let image = request.initImage else { throw invalid("a mask needs an init image to repaint") }
        guard request.hires == nil else { throw invalid("the hires fix runs on text-to-image requests only (no init image or mask)") }
        guard mask.width == image.width, mask.height == image.height else {
            throw invalid("the mask is \(mask.width)x\(mask.height) but the init image is \(image.width)x\(image.height); they must be the same size")
        }
        for (what, picture) in [("mask", mask), ("init image", image)] {
            guard picture.width > 0, picture.height > 0, picture.rgb.count == picture.width * picture.height * 3,
                  picture.rgb.allSatisfy({ $0.isFinite }) else {
                throw invalid("the \(what) has \(picture.rgb.count) values for \(picture.width)x\(picture.height), or values outside [0, 1]")
            }
        }
        var inner = request
        inner.maskBlur = 0
        inner.maskCrop = nil
        let blurred = request.maskBlur > 0 ? mask.gaussianBlurred(radius: request.maskBlur) : mask
        inner.mask = blurred
        guard let padding = request.maskCrop else { return (inner, nil) }

        let (w, h) = (request.width ?? image.width, request.height ?? image.height)
        for (name, value) in [("width", w), ("height", h)] where !(1...maxSide).contains(value) {
            throw invalid("\(name) must be 1…\(maxSide) pixels (got \(value))")
        }
        let grey = blurred.greyLevels
        guard let crop = MaskCrop(maskGrey: grey, width: image.width, height: image.height, outWidth: w, outHeight: h, padding: padding) else {
            throw invalid("the mask is black everywhere, so mask crop has no masked area to crop to")
        }
        let original = try RGBImage(width: image.width, height: image.height, pixels: image.levels)
        let maskRGB = try RGBImage(width: image.width, height: image.height, pixels: blurred.levels)
        func prepared(_ picture: RGBImage) throws -> InitImage {
            InitImage(levels: try crop.cropAndFill(picture, width: w, height: h).pixels, width: w, height: h)
        }
        inner.initImage = try prepared(original)
        inner.mask = try prepared(maskRGB)
        inner.width = w
        inner.height = h
        return (inner, MaskOverlay(original: original, maskGrey: grey, crop: crop))
    }
}

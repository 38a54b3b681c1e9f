/// SDXL's size conditioning (Podell et al. 2023, §2.2): the UNet sees the image's original size,
/// the top-left corner of its crop and the target size (a refiner the aesthetic score in place of
/// the target) as "time ids". diffusers' `original_size`, `crops_coords_top_left`, `target_size`
/// and their `negative_` forms for the unconditional rows; a size left nil is the output's.
/// Conditioning the negative rows on a small original size (e.g. 512×512) is a known way to steer
/// away from low-resolution looks.
public struct SDXLMicroConditioning: Sendable, Hashable {
    public struct Size: Sendable, Hashable {
        public var width: Int, height: Int
        public init(width: Int, height: Int) { (self.width, self.height) = (width, height) }
    }
    public struct Crop: Sendable, Hashable {
        public var top: Int, left: Int
        public init(top: Int, left: Int) { (self.top, self.left) = (top, left) }
    }

    public var originalSize: Size? = nil
    public var cropTopLeft = Crop(top: 0, left: 0)
    public var targetSize: Size? = nil
    public var negativeOriginalSize: Size? = nil
    public var negativeCropTopLeft = Crop(top: 0, left: 0)
    public var negativeTargetSize: Size? = nil

    public init() {}

    /// Which diffusers pipeline's rules apply to the negative rows.
    enum Pipeline {
        /// StableDiffusionXLPipeline (and its ControlNet form): the negative ids are the positive
        /// ones unless both `negative_original_size` and `negative_target_size` are given.
        case textToImage
        /// The img2img and inpainting pipelines (and ControlNet img2img): each negative size
        /// defaults to the positive one, and the negative rows take the positive crop (diffusers
        /// passes `crops_coords_top_left` there; `negative_crops_coords_top_left` only reaches a
        /// refiner's aesthetic-score ids).
        case fromImage
        /// StableDiffusionXLControlNetInpaintPipeline: the negative rows take the positive ids.
        case controlNetInpaint
    }

    /// The positive and negative time ids (6 values: original h, w, crop top, left, target h, w;
    /// with `aestheticScores`, 5: original h, w, crop top, left, score) for an output of
    /// `width` × `height`.
    func timeIds(width: Int, height: Int, pipeline: Pipeline,
                 aestheticScores: (positive: Float, negative: Float)? = nil) -> (positive: [Float], negative: [Float]) {
        let output = Size(width: width, height: height)
        let original = originalSize ?? output, target = targetSize ?? output
        func ids(_ o: Size, _ c: Crop, _ t: Size) -> [Float] {
            [Float(o.height), Float(o.width), Float(c.top), Float(c.left), Float(t.height), Float(t.width)]
        }
        func aesthetic(_ o: Size, _ c: Crop, _ score: Float) -> [Float] {
            [Float(o.height), Float(o.width), Float(c.top), Float(c.left), score]
        }
        if let scores = aestheticScores {
            let positive = aesthetic(original, cropTopLeft, scores.positive)
            switch pipeline {
            case .controlNetInpaint: return (positive, aesthetic(original, cropTopLeft, scores.negative))
            case .textToImage, .fromImage: return (positive, aesthetic(negativeOriginalSize ?? original, negativeCropTopLeft, scores.negative))
            }
        }
        let positive = ids(original, cropTopLeft, target)
        switch pipeline {
        case .textToImage:
            guard let negativeOriginal = negativeOriginalSize, let negativeTarget = negativeTargetSize else { return (positive, positive) }
            return (positive, ids(negativeOriginal, negativeCropTopLeft, negativeTarget))
        case .fromImage:
            return (positive, ids(negativeOriginalSize ?? original, cropTopLeft, negativeTargetSize ?? target))
        case .controlNetInpaint:
            return (positive, positive)
        }
    }
}

extension GenerationRequest {
    /// The diffusers pipeline whose time-id rules this request follows.
    var microConditioningPipeline: SDXLMicroConditioning.Pipeline {
        if mask != nil && !controlNets.isEmpty { return .controlNetInpaint }
        return initImage != nil || initLatents != nil || mask != nil ? .fromImage : .textToImage
    }
}

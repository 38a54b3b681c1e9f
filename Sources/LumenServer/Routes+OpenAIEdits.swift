import Foundation
import Hummingbird
import Lumen

extension LumenServer {
    /// `POST /v1/images/edits`: OpenAI's multipart form. `image` (or `image[]`, one of them) is
    /// the starting image; without `mask` the request is image-to-image, with it inpainting.
    /// OpenAI's mask marks the area to edit by transparency: a pixel's repaint weight is
    /// 1 − alpha, so fully transparent (alpha 0) is repainted and opaque kept, as Lumen's white =
    /// repaint mask (binarized at one half, as diffusers' mask processor does).
    func openAIEdits(_ request: Request, _ context: LumenRequestContext) async throws -> Response {
        let boundary = try MultipartForm.boundary(contentType: request.headers[.contentType])
        let form = try MultipartForm(body: Data(buffer: try await body(request)), boundary: boundary)
        let fileNames: Set<String> = ["image", "image[]", "mask"]
        let text = try form.textFields(excluding: fileNames)

        // Numbers arrive as text in a form; convert the ones the JSON route reads as numbers.
        var o: [String: Any] = [:]
        for (key, value) in text {
            switch key {
            case "n", "seed", "steps":
                guard let v = Int(value.trimmingCharacters(in: .whitespaces)) else {
                    throw APIError(status: .badRequest, message: "\(key) \"\(value.prefix(40))\": expected an integer", param: key)
                }
                o[key] = NSNumber(value: v)
            case "guidance", "strength", "guidance_rescale", "eta", "image_guidance":
                guard let v = Double(value.trimmingCharacters(in: .whitespaces)), v.isFinite else {
                    throw APIError(status: .badRequest, message: "\(key) \"\(value.prefix(40))\": expected a number", param: key)
                }
                o[key] = NSNumber(value: v)
            default:
                o[key] = value
            }
        }
        var options = try openAIOptions(o)

        let images = form.parts(named: "image", "image[]")
        guard let imagePart = images.first else {
            throw APIError(status: .badRequest, message: "image: a PNG file part is required", param: "image", code: "missing_required_parameter")
        }
        guard images.count == 1 else {
            throw APIError(status: .badRequest, message: "image: \(images.count) images given; Lumen edits one image a request", param: "image")
        }
        let image = try PNGCodec.decode(imagePart.body, field: "image", maxPixels: config.maxImagePixels)
        for (name, v) in [("width", image.image.width), ("height", image.image.height)] where v % 8 != 0 || v > config.maxSide {
            throw APIError(status: .badRequest,
                           message: "image: its \(name) is \(v) pixels; expected a multiple of 8 up to \(config.maxSide) (images are not resized)",
                           param: "image")
        }
        var g = options.request
        if let w = g.width, let h = g.height, w != image.image.width || h != image.image.height {
            throw APIError(status: .badRequest,
                           message: "size \(w)x\(h): the image is \(image.image.width)x\(image.image.height) and is not resized; give its size, \"auto\" or no size",
                           param: "size")
        }
        g.width = image.image.width
        g.height = image.image.height
        g.initImage = InitImage(width: image.image.width, height: image.image.height, rgb: image.normalized)

        let masks = form.parts(named: "mask")
        guard masks.count <= 1 else {
            throw APIError(status: .badRequest, message: "mask: given \(masks.count) times; expected one PNG", param: "mask")
        }
        if let maskPart = masks.first {
            let mask = try PNGCodec.decodeWithAlpha(maskPart.body, field: "mask", maxPixels: config.maxImagePixels)
            guard mask.image.width == image.image.width, mask.image.height == image.image.height else {
                throw APIError(status: .badRequest,
                               message: "mask: it is \(mask.image.width)x\(mask.image.height) but the image is \(image.image.width)x\(image.image.height); they must be the same size",
                               param: "mask")
            }
            guard let alpha = mask.alpha else {
                throw APIError(status: .badRequest,
                               message: "mask: the PNG has no alpha channel; OpenAI's masks mark the area to edit as transparent (alpha 0) and the area to keep as opaque",
                               param: "mask", code: "invalid_image")
            }
            g.mask = InitImage(width: mask.image.width, height: mask.image.height, rgb: alpha.flatMap { a in [1 - a, 1 - a, 1 - a] })
        }
        // diffusers' defaults: 0.8 for image-to-image, 1.0 for inpainting.
        g.strength = try float(o, "strength") ?? (g.mask == nil ? 0.8 : 1.0)
        guard g.strength > 0, g.strength <= 1 else {
            throw APIError(status: .badRequest, message: "strength \(g.strength): expected a number in (0, 1]", param: "strength")
        }
        options.request = g
        try validate(width: g.width, height: g.height, steps: g.steps, count: g.count)
        return try await openAIRun(options, request: request, context: context)
    }
}

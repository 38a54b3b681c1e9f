import Foundation
import Lumen

/// AUTOMATIC1111's inpainting fields of `POST /sdapi/v1/img2img`, read into the library's masked
/// image-to-image. The field names, their defaults and the mask's reading are A1111's; what the
/// settings then do is the library's (diffusers' inpainting), so the images equal `lumen
/// generate --mask` with the same settings, not A1111's own:
///
/// - `mask`: a base64 PNG, the init image's size. Read as A1111's `create_binary_mask` reads it:
///   an RGBA mask whose alpha is not opaque everywhere is its alpha channel, anything else its
///   grey levels (Pillow's `convert("L")`); a level above 128 is repainted.
/// - `inpainting_mask_invert` (0, 1): 1 repaints the black area instead.
/// - `mask_blur` (A1111's default 4; or `mask_blur_x`/`mask_blur_y`, which must then be equal):
///   the library's mask blur, diffusers' (Pillow's GaussianBlur), not A1111's OpenCV Gaussian.
/// - `inpaint_full_res` (A1111's default true, its "Only masked") with
///   `inpaint_full_res_padding` (default 0): the library's mask crop, diffusers'
///   `padding_mask_crop`. A mask with nothing to repaint then falls back to plain
///   image-to-image, as A1111 does.
/// - `inpainting_fill`: 1 ("original") is the library's masked image-to-image and the value used
///   when the field is absent (A1111's default is 0, "fill", which Lumen does not do); 0, 2 and
///   3 are refused naming the field.
extension LumenServer {
    /// Reads the mask fields of `o` into `g` (whose init image is set). Returns what A1111 adds
    /// to the infotext for them (", Mask blur: 4, …"), empty without a mask.
    func applyA1111Mask(_ o: [String: Any], to g: inout GenerationRequest) throws -> String {
        guard let value = o["mask"], !(value is NSNull) else { return "" }
        guard let text = value as? String, !text.isEmpty else {
            throw APIError(status: .badRequest, message: "mask: expected a base64 PNG", param: "mask")
        }
        guard let image = g.initImage else { return "" }  // the caller checked init_images first
        let decoded = try PNGCodec.decodeWithAlpha(try PNGCodec.data(base64: text, field: "mask"), field: "mask",
                                                   maxPixels: config.maxImagePixels)
        let (w, h) = (decoded.image.width, decoded.image.height)
        guard w == image.width, h == image.height else {
            throw APIError(status: .badRequest,
                           message: "mask: it is \(w)x\(h) but init_images[0] is \(image.width)x\(image.height); they must be the same size",
                           param: "mask")
        }

        let fill = try int(o, "inpainting_fill") ?? 1
        guard fill == 1 else {
            let names = [0: "fill", 2: "latent noise", 3: "latent nothing"]
            throw APIError(status: .badRequest,
                           message: "inpainting_fill \(fill)\(names[fill].map { " (\($0))" } ?? ""): only 1 (original, the init image under the mask) is supported",
                           param: "inpainting_fill")
        }
        let invert = try int(o, "inpainting_mask_invert") ?? 0
        guard invert == 0 || invert == 1 else {
            throw APIError(status: .badRequest, message: "inpainting_mask_invert \(invert): expected 0 (repaint the white area) or 1 (the black area)",
                           param: "inpainting_mask_invert")
        }
        let blur = try a1111MaskBlur(o)
        let fullRes = try bool(o, "inpaint_full_res") ?? true
        let padding = try int(o, "inpaint_full_res_padding") ?? 0
        guard (0...GenerationRequest.maxSide).contains(padding) else {
            throw APIError(status: .badRequest, message: "inpaint_full_res_padding \(padding): expected 0…\(GenerationRequest.maxSide) pixels",
                           param: "inpaint_full_res_padding")
        }

        // A1111's create_binary_mask: the alpha channel where it is not opaque everywhere, else
        // the grey levels; then above 128 is white.
        let levels: [UInt8]
        if let alpha = decoded.alpha, alpha.contains(where: { $0 < 1 }) {
            levels = alpha.map { UInt8(max(0, min(255, ($0 * 255).rounded()))) }
        } else {
            levels = InitImage(width: w, height: h, rgb: decoded.image.pixels.map { Float($0) / 255 }).greyLevels
        }
        let repaint = levels.map { ($0 > 128) != (invert == 1) }
        var info = ""
        if blur > 0 { info += ", Mask blur: \(blur)" }
        if invert == 1 { info += ", Mask mode: Inpaint not masked" }
        if fullRes && !repaint.contains(true) {
            // A1111 cannot crop to an empty mask and runs plain image-to-image instead.
            return info
        }
        g.mask = InitImage(width: w, height: h, rgb: repaint.flatMap { $0 ? [1, 1, 1] : [0, 0, 0] })
        g.maskBlur = Float(blur)
        if fullRes {
            g.maskCrop = padding
            info += ", Inpaint area: Only masked, Masked area padding: \(padding)"
        }
        return info
    }

    /// `mask_blur`, or `mask_blur_x` and `mask_blur_y` (A1111 blurs each axis on its own; the
    /// library's blur is one standard deviation for both, so they must be equal).
    private func a1111MaskBlur(_ o: [String: Any]) throws -> Int {
        func read(_ key: String) throws -> Int? {
            guard let v = try int(o, key) else { return nil }
            guard (0...GenerationRequest.maxSide).contains(v) else {
                throw APIError(status: .badRequest, message: "\(key) \(v): expected 0…\(GenerationRequest.maxSide) pixels", param: key)
            }
            return v
        }
        let both = try read("mask_blur")
        let x = try read("mask_blur_x") ?? both ?? 4
        let y = try read("mask_blur_y") ?? both ?? 4
        if let both {
            for (key, v) in [("mask_blur_x", x), ("mask_blur_y", y)] where v != both {
                throw APIError(status: .badRequest, message: "\(key) \(v): differs from mask_blur \(both); give one blur for both axes",
                               param: key)
            }
        }
        guard x == y else {
            throw APIError(status: .badRequest,
                           message: "mask_blur_y \(y): differs from mask_blur_x \(x); Lumen blurs masks with one standard deviation for both axes",
                           param: "mask_blur_y")
        }
        return x
    }

    /// A JSON boolean (or 0/1, as A1111's request model coerces them).
    func bool(_ o: [String: Any], _ key: String) throws -> Bool? {
        guard let v = o[key], !(v is NSNull) else { return nil }
        if let n = v as? NSNumber, n.doubleValue == 0 || n.doubleValue == 1 { return n.doubleValue == 1 }
        throw APIError(status: .badRequest, message: "\(key): expected true or false", param: key)
    }
}

/// How far to extend a canvas on each side, in pixels (multiples of the VAE's scale factor).
public struct Outpaint: Sendable, Hashable {
    public var left = 0, right = 0, top = 0, bottom = 0

    public init(left: Int = 0, right: Int = 0, top: Int = 0, bottom: Int = 0) {
        (self.left, self.right, self.top, self.bottom) = (left, right, top, bottom)
    }

    /// Parses "left=128,right=64" (any of left, right, top, bottom).
    public init?(_ text: String) {
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, let n = Int(kv[1]), n >= 0, n <= GenerationRequest.maxSide else { return nil }
            switch kv[0] {
            case "left": left = n
            case "right": right = n
            case "top": top = n
            case "bottom": bottom = n
            default: return nil
            }
        }
        guard left + right + top + bottom > 0 else { return nil }
    }
}

import Foundation

extension InitImage {
    /// The image on a canvas extended by `pad`, the new area filled with the nearest edge pixels
    /// (so that image-to-image below strength 1 starts from plausible colours), and the mask that
    /// repaints exactly the new area (white) and keeps the image (black): outpainting as masked
    /// image-to-image.
    public func outpainted(_ pad: Outpaint) -> (image: InitImage, mask: InitImage) {
        let w = width + pad.left + pad.right, h = height + pad.top + pad.bottom
        var rgb = [Float](repeating: 0, count: w * h * 3), mask = rgb
        for y in 0..<h {
            let sy = min(max(y - pad.top, 0), height - 1)
            for x in 0..<w {
                let sx = min(max(x - pad.left, 0), width - 1)
                let inside = y >= pad.top && y < pad.top + height && x >= pad.left && x < pad.left + width
                for c in 0..<3 {
                    rgb[(y * w + x) * 3 + c] = self.rgb[(sy * width + sx) * 3 + c]
                    mask[(y * w + x) * 3 + c] = inside ? 0 : 1
                }
            }
        }
        return (InitImage(width: w, height: h, rgb: rgb), InitImage(width: w, height: h, rgb: mask))
    }
}

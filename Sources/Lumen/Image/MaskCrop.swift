import Foundation

/// diffusers' `padding_mask_crop`: inpaint only the part of a large image around its mask, at the
/// generation size, and lay the result back. The region is the mask's bounding box (every pixel
/// that is not black) plus `padding` pixels, widened on its short side to the output's aspect ratio
/// and kept inside the image (`VaeImageProcessor.get_crop_region`). Written from diffusers'
/// description and checked against its pipeline (tools/make_mask_fixtures.py).
public struct MaskCrop: Sendable, Hashable {
    /// The region's left, top, right and bottom pixel edges (right and bottom excluded).
    public let x0: Int, y0: Int, x1: Int, y1: Int

    public var width: Int { x1 - x0 }
    public var height: Int { y1 - y0 }

    public init(x0: Int, y0: Int, x1: Int, y1: Int) {
        (self.x0, self.y0, self.x1, self.y1) = (x0, y0, x1, y1)
    }

    /// The region for a mask (grey levels, width × height) and an output of `outWidth` ×
    /// `outHeight`, or nil when the mask has no pixel above black (or the sizes are not positive
    /// and in agreement).
    public init?(maskGrey grey: [UInt8], width w: Int, height h: Int, outWidth: Int, outHeight: Int, padding: Int) {
        guard w > 0, h > 0, grey.count == w * h, outWidth > 0, outHeight > 0, padding >= 0 else { return nil }
        var (left, right, top, bottom) = (w, -1, h, -1)
        for y in 0..<h {
            for x in 0..<w where grey[y * w + x] != 0 {
                (left, right, top, bottom) = (min(left, x), max(right, x), min(top, y), max(bottom, y))
            }
        }
        guard right >= 0 else { return nil }
        var (x0, y0) = (max(left - padding, 0), max(top - padding, 0))
        var (x1, y1) = (min(right + 1 + padding, w), min(bottom + 1 + padding, h))
        // Widen the short side to the output's ratio, half on each side (the odd pixel after),
        // shifted back inside the image, and cut at its edge when the image is too small for it.
        let target = Double(outWidth) / Double(outHeight)
        func widen(_ a: inout Int, _ b: inout Int, by diff: Int, limit: Int) {
            a -= diff / 2
            b += diff - diff / 2
            if b >= limit { a -= b - limit; b = limit }
            if a < 0 { b -= a; a = 0 }
            if b >= limit { b = limit }
        }
        if Double(x1 - x0) / Double(y1 - y0) > target {
            widen(&y0, &y1, by: Int(Double(x1 - x0) / target - Double(y1 - y0)), limit: h)
        } else {
            widen(&x0, &x1, by: Int(Double(y1 - y0) * target - Double(x1 - x0)), limit: w)
        }
        self.init(x0: x0, y0: y0, x1: x1, y1: y1)
    }
}

extension RGBImage {
    /// Pillow's `paste` of `image` with its top left at (`x`, `y`), clipped to this image.
    func pasting(_ image: RGBImage, x: Int, y: Int) throws -> RGBImage {
        var out = pixels
        let (top, bottom) = (max(0, -y), min(image.height, height - y)), (left, right) = (max(0, -x), min(image.width, width - x))
        guard top < bottom, left < right else { return self }
        let cols = left..<right
        for row in top..<bottom {
            let src = (row * image.width + cols.lowerBound) * 3, dst = ((y + row) * width + x + cols.lowerBound) * 3
            out.replaceSubrange(dst..<(dst + cols.count * 3), with: image.pixels[src..<(src + cols.count * 3)])
        }
        return try RGBImage(width: width, height: height, pixels: out)
    }

    /// diffusers' `resize_mode="fill"` (`_resize_and_fill`): resized with Lanczos to fit inside
    /// `w` × `h` keeping its aspect ratio, centred, and the margins filled by stretching the
    /// filter's taps next to the image's edges (with Pillow's default filter, bicubic, since
    /// diffusers names none there).
    func resizedToFill(width w: Int, height h: Int) throws -> RGBImage {
        let ratio = Double(w) / Double(h), source = Double(width) / Double(height)
        let sw = ratio < source ? w : width * h / height
        let sh = ratio >= source ? h : height * w / width
        let resized = try resizedLanczos(width: sw, height: sh)
        var out = try RGBImage(width: w, height: h, pixels: [UInt8](repeating: 0, count: w * h * 3))
            .pasting(resized, x: w / 2 - sw / 2, y: h / 2 - sh / 2)
        let (rw, rh) = (Double(resized.width), Double(resized.height))
        if ratio < source {
            let fill = h / 2 - sh / 2
            if fill > 0 {
                out = try out.pasting(try resized.resized(width: w, height: fill, box: (0, 0, Double(w), 0), filter: .bicubic), x: 0, y: 0)
                out = try out.pasting(try resized.resized(width: w, height: fill, box: (0, rh, Double(w), rh), filter: .bicubic), x: 0, y: fill + sh)
            }
        } else if ratio > source {
            let fill = w / 2 - sw / 2
            if fill > 0 {
                out = try out.pasting(try resized.resized(width: fill, height: h, box: (0, 0, 0, Double(h)), filter: .bicubic), x: 0, y: 0)
                out = try out.pasting(try resized.resized(width: fill, height: h, box: (rw, 0, rw, Double(h)), filter: .bicubic), x: fill + sw, y: 0)
            }
        }
        return out
    }

    /// diffusers' `resize_mode="crop"` (`_resize_and_crop`): resized with Lanczos to cover `w` ×
    /// `h` keeping its aspect ratio, centred, the excess cut off.
    func resizedToCover(width w: Int, height h: Int) throws -> RGBImage {
        let ratio = Double(w) / Double(h), source = Double(width) / Double(height)
        let sw = ratio > source ? w : width * h / height
        let sh = ratio <= source ? h : height * w / width
        let resized = try resizedLanczos(width: sw, height: sh)
        return try RGBImage(width: w, height: h, pixels: [UInt8](repeating: 0, count: w * h * 3))
            .pasting(resized, x: w / 2 - sw / 2, y: h / 2 - sh / 2)
    }
}

extension MaskCrop {
    /// The region of `image` resized to `w` × `h` as diffusers' inpainting preprocessing does with
    /// `padding_mask_crop` (`crop`, then `resize_mode="fill"`), for the init image and the mask.
    public func cropAndFill(_ image: RGBImage, width w: Int, height h: Int) throws -> RGBImage {
        guard x0 >= 0, y0 >= 0, x1 <= image.width, y1 <= image.height, width > 0, height > 0, w > 0, h > 0 else {
            throw ImageError.invalidSize(detail: "a crop (\(x0), \(y0))–(\(x1), \(y1)) of a \(image.width)x\(image.height) image to \(w)x\(h)")
        }
        return try image.cropped(x: x0, y: y0, width: width, height: height).resizedToFill(width: w, height: h)
    }

    /// diffusers' `apply_overlay`: `generated` (of this region, resized back into it) under
    /// `original`, whose opacity is the inverted mask (`maskGrey`, grey levels of the original's
    /// size), composited in Pillow's 8-bit arithmetic (the original premultiplied by its alpha and
    /// back, then `alpha_composite`). Where the mask is white the generated pixel shows, where
    /// black the original, between them a blend.
    public func overlay(_ generated: RGBImage, onto original: RGBImage, maskGrey: [UInt8]) throws -> RGBImage {
        let (w, h) = (original.width, original.height)
        guard maskGrey.count == w * h, width > 0, height > 0 else {
            throw ImageError.invalidSize(detail: "a mask of \(maskGrey.count) levels for a \(w)x\(h) image")
        }
        let region = try generated.resizedToCover(width: width, height: height)
        let under = try RGBImage(width: w, height: h, pixels: [UInt8](repeating: 0, count: w * h * 3))
            .pasting(region, x: x0, y: y0)
        @inline(__always) func div255(_ v: Int) -> Int { let t = v + 128; return ((t >> 8) + t) >> 8 }
        var out = under.pixels
        for p in 0..<(w * h) {
            let alpha = 255 - Int(maskGrey[p])
            guard alpha > 0 else { continue }
            let coef1 = alpha * 128, coef2 = 255 * 128 - coef1
            for c in 0..<3 {
                // RGBA → RGBa → RGBA: premultiplied with rounding, then divided back (truncating).
                let premultiplied = div255(Int(original.pixels[3 * p + c]) * alpha)
                let source = alpha == 255 ? premultiplied : min(255 * premultiplied / alpha, 255)
                let t = source * coef1 + Int(under.pixels[3 * p + c]) * coef2 + (0x80 << 7)
                out[3 * p + c] = UInt8((((t >> 8) + t) >> 8) >> 7)
            }
        }
        return try RGBImage(width: w, height: h, pixels: out)
    }
}

/// What lays a crop's images back: the original, its mask and the region.
struct MaskOverlay {
    let original: RGBImage
    let maskGrey: [UInt8]
    let crop: MaskCrop

    func apply(to generated: RGBImage) throws -> RGBImage {
        try crop.overlay(generated, onto: original, maskGrey: maskGrey)
    }
}

extension InitImage {
    /// The grey levels as Pillow's `convert("L")` computes them from the 8-bit RGB levels.
    public var greyLevels: [UInt8] {
        let v = levels
        var grey = [UInt8](repeating: 0, count: width * height)
        for p in grey.indices {
            let r = Int(v[3 * p]) * 19595, g = Int(v[3 * p + 1]) * 38470, b = Int(v[3 * p + 2]) * 7471
            grey[p] = UInt8((r + g + b + 0x8000) >> 16)
        }
        return grey
    }
}

import Foundation

/// Resizing as Pillow's `Image.resize(size, Image.LANCZOS)` computes it on 8-bit RGB: a Lanczos-3
/// filter widened by the downscaling factor, its weights normalised and rounded to 22-bit fixed
/// point, applied horizontally then vertically with each pass rounded and clipped to 8 bits.
/// Written from Pillow's documented behaviour and checked against its output pixel for pixel
/// (tools/make_resize_fixtures.py). The hires fix's pixel upscaler uses it.
extension RGBImage {
    public func resizedLanczos(width outW: Int, height outH: Int) throws -> RGBImage {
        try resized(width: outW, height: outH, box: (0, 0, Double(width), Double(height)))
    }

    /// Pillow's `resize(size, filter, box=(x0, y0, x1, y1))`: the region `box` of the image (in
    /// pixel edges, possibly of zero width or height, which then samples the filter's taps next to
    /// that edge) resized to `outW` × `outH`. diffusers' `resize_mode="fill"` fills its margins so,
    /// with Pillow's default filter (bicubic).
    func resized(width outW: Int, height outH: Int, box: (x0: Double, y0: Double, x1: Double, y1: Double),
                 filter: ResampleFilter = .lanczos) throws -> RGBImage {
        precondition(outW > 0 && outH > 0, "a resize to \(outW)x\(outH)")
        precondition(box.x0 >= 0 && box.y0 >= 0 && box.x1 <= Double(width) && box.y1 <= Double(height)
                     && box.x1 >= box.x0 && box.y1 >= box.y0, "a resize box inside the image")
        if box.x0 == box.x0.rounded(.down), box.y0 == box.y0.rounded(.down),
           box.x1 - box.x0 == Double(outW), box.y1 - box.y0 == Double(outH) {
            return try cropped(x: Int(box.x0), y: Int(box.y0), width: outW, height: outH)  // Pillow crops then
        }
        var out = pixels, (w, h) = (width, height)
        if outW != w || box.x0 != 0 || box.x1 != Double(outW) {
            out = Self.resample(out, count: w, lines: h, stride: (3, 3 * w), span: (box.x0, box.x1), filter: filter, outCount: outW, outStride: (3, 3 * outW))
            w = outW
        }
        if outH != h || box.y0 != 0 || box.y1 != Double(outH) {
            out = Self.resample(out, count: h, lines: w, stride: (3 * w, 3), span: (box.y0, box.y1), filter: filter, outCount: outH, outStride: (3 * w, 3))
            h = outH
        }
        return try RGBImage(width: w, height: h, pixels: out)
    }

    /// The `width` × `height` region at (`x`, `y`), which must lie inside the image.
    func cropped(x: Int, y: Int, width cw: Int, height ch: Int) throws -> RGBImage {
        precondition(x >= 0 && y >= 0 && x + cw <= width && y + ch <= height, "a crop inside the image")
        var out = [UInt8](repeating: 0, count: cw * ch * 3)
        for row in 0..<ch {
            let src = ((y + row) * width + x) * 3
            out.replaceSubrange((row * cw * 3)..<((row + 1) * cw * 3), with: pixels[src..<(src + cw * 3)])
        }
        return try RGBImage(width: cw, height: ch, pixels: out)
    }

    /// One pass along an axis of `count` samples (at `stride.along` apart), for each of `lines`
    /// lines (at `stride.across` apart), of the samples' `span` (edges, in samples).
    private static func resample(_ src: [UInt8], count: Int, lines: Int, stride: (along: Int, across: Int), span: (Double, Double),
                                 filter: ResampleFilter, outCount: Int, outStride: (along: Int, across: Int)) -> [UInt8] {
        let precision = 22
        let scale = (span.1 - span.0) / Double(outCount), filterScale = max(scale, 1)
        let support = filter.support * filterScale, inverseScale = 1 / filterScale
        let weight = filter.weight
        var taps: [(first: Int, weights: [Int])] = []
        for o in 0..<outCount {
            let center = span.0 + (Double(o) + 0.5) * scale
            let first = max(Int(center - support + 0.5), 0)  // C's truncation; clamped at 0 either way
            let last = min(Int(center + support + 0.5), count)
            // Pillow (12.3 on) multiplies by the inverse rather than dividing: the last bit can differ.
            var k = (first..<last).map { weight((Double($0) - center + 0.5) * inverseScale) }
            let sum = k.reduce(0, +)
            if sum != 0 { k = k.map { $0 / sum } }
            let fixed = k.map { Int(($0 < 0 ? -0.5 : 0.5) + $0 * Double(1 << precision)) }
            taps.append((first, fixed))
        }
        var dst = [UInt8](repeating: 0, count: outCount * lines * 3)
        for line in 0..<lines {
            for o in 0..<outCount {
                let (first, weights) = taps[o]
                for c in 0..<3 {
                    var acc = 1 << (precision - 1)
                    for (j, wgt) in weights.enumerated() {
                        acc += Int(src[line * stride.across + (first + j) * stride.along + c]) * wgt
                    }
                    dst[line * outStride.across + o * outStride.along + c] = UInt8(min(max(acc >> precision, 0), 255))
                }
            }
        }
        return dst
    }
}

/// The filters of Pillow's resampling that Lumen uses, as its C code defines them.
enum ResampleFilter {
    /// A 3-lobed Lanczos window (`Image.LANCZOS`).
    case lanczos
    /// Keys' cubic with a = -0.5 (`Image.BICUBIC`, `resize`'s default).
    case bicubic

    var support: Double { self == .lanczos ? 3 : 2 }

    func weight(_ x: Double) -> Double {
        switch self {
        case .lanczos:
            func sinc(_ x: Double) -> Double { x == 0 ? 1 : sin(x * Double.pi) / (x * Double.pi) }
            return (-3 <= x && x < 3) ? sinc(x) * sinc(x / 3) : 0
        case .bicubic:
            let a = -0.5, t = abs(x)
            if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
            if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
            return 0
        }
    }
}

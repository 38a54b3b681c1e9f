import Foundation

/// Resizing as Pillow's `Image.resize(size, Image.LANCZOS)` computes it on 8-bit RGB: a Lanczos-3
/// filter widened by the downscaling factor, its weights normalised and rounded to 22-bit fixed
/// point, applied horizontally then vertically with each pass rounded and clipped to 8 bits.
/// Written from Pillow's documented behaviour and checked against its output pixel for pixel
/// (tools/make_resize_fixtures.py). The hires fix's pixel upscaler uses it.
extension RGBImage {
    public func resizedLanczos(width outW: Int, height outH: Int) throws -> RGBImage {
        precondition(outW > 0 && outH > 0, "a resize to \(outW)x\(outH)")
        var out = pixels, (w, h) = (width, height)
        if outW != w {
            out = Self.resample(out, count: w, lines: h, stride: (3, 3 * w), outCount: outW, outStride: (3, 3 * outW))
            w = outW
        }
        if outH != h {
            out = Self.resample(out, count: h, lines: w, stride: (3 * w, 3), outCount: outH, outStride: (3 * w, 3))
            h = outH
        }
        return try RGBImage(width: w, height: h, pixels: out)
    }

    /// One pass along an axis of `count` samples (at `stride.along` apart), for each of `lines`
    /// lines (at `stride.across` apart).
    private static func resample(_ src: [UInt8], count: Int, lines: Int, stride: (along: Int, across: Int),
                                 outCount: Int, outStride: (along: Int, across: Int)) -> [UInt8] {
        let precision = 22
        let scale = Double(count) / Double(outCount), filterScale = max(scale, 1)
        let support = 3 * filterScale
        func lanczos(_ x: Double) -> Double {
            func sinc(_ x: Double) -> Double { x == 0 ? 1 : sin(x * Double.pi) / (x * Double.pi) }
            return (-3 <= x && x < 3) ? sinc(x) * sinc(x / 3) : 0
        }
        var taps: [(first: Int, weights: [Int])] = []
        for o in 0..<outCount {
            let center = (Double(o) + 0.5) * scale
            let first = max(Int(center - support + 0.5), 0)  // C's truncation; clamped at 0 either way
            let last = min(Int(center + support + 0.5), count)
            var k = (first..<last).map { lanczos((Double($0) - center + 0.5) / filterScale) }
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

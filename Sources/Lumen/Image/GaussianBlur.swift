import Foundation

/// Pillow's `ImageFilter.GaussianBlur(radius)` on 8-bit channels, which diffusers' mask processor
/// applies as `VaeImageProcessor.blur(mask, blur_factor)`: not a sampled Gaussian but three passes
/// of an "extended" box filter per axis (a box of fractional radius whose two outer taps are
/// weighted by the fraction), sized so that the three passes have the Gaussian's variance
/// (Gwosdek et al., "Theoretical foundations of Gaussian convolution by extended box
/// filtering"). Every pass rounds to 8 bits in 24-bit fixed point and repeats the edge pixels
/// past the image's ends; the horizontal passes run first. Written from Pillow's description and
/// checked against its output level for level (tools/make_mask_fixtures.py).
enum ExtendedBoxBlur {
    static let passes = 3

    /// The box radius whose `passes` passes have variance `sigma`², in single precision as Pillow
    /// computes it.
    static func boxRadius(sigma: Float) -> Float {
        let sigma2 = sigma * sigma / Float(passes)
        let length = Float((12.0 * Double(sigma2) + 1.0).squareRoot())
        let l = Float(((Double(length) - 1.0) / 2.0).rounded(.down))
        var a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2)
        a /= 6 * (sigma2 - (l + 1) * (l + 1))
        return l + a
    }

    /// One pass along a line of `n` samples read at `input[start + i·stride]`, written to `out[i]`.
    /// The weights are 24-bit fixed point: `ww` for the box's whole taps, `fw` for each of its two
    /// fractional ends. Arithmetic wraps at 32 bits as the unsigned accumulators of the original do.
    static func line(_ input: [UInt8], start: Int, stride: Int, count n: Int, radius floatRadius: Float, into out: inout [UInt8]) {
        let radius = Int(floatRadius)
        let ww = UInt32(Float(1 << 24) / (floatRadius * 2 + 1))
        let fw = (UInt32(1 << 24) &- UInt32(radius * 2 + 1) &* ww) / 2
        let edgeA = min(radius + 1, n), edgeB = max(n - radius - 1, 0), last = n - 1
        @inline(__always) func px(_ i: Int) -> UInt32 { UInt32(input[start + i * stride]) }
        var acc = px(0) &* UInt32(radius + 1)
        if edgeA > 1 { for x in 0..<(edgeA - 1) { acc &+= px(x) } }
        acc &+= px(last) &* UInt32(truncatingIfNeeded: radius - edgeA + 1)
        @inline(__always) func save(_ x: Int, _ left: Int, _ right: Int) {
            let bulk = acc &* ww &+ (px(left) &+ px(right)) &* fw
            out[x] = UInt8(truncatingIfNeeded: (bulk &+ (1 << 23)) >> 24)
        }
        @inline(__always) func move(_ subtract: Int, _ add: Int) { acc = acc &+ px(add) &- px(subtract) }
        if edgeA <= edgeB {
            for x in 0..<edgeA { move(0, x + radius); save(x, 0, x + radius + 1) }
            for x in edgeA..<edgeB { move(x - radius - 1, x + radius); save(x, x - radius - 1, x + radius + 1) }
            for x in edgeB...last { move(x - radius - 1, last); save(x, x - radius - 1, last) }
        } else {
            for x in 0..<edgeB { move(0, x + radius); save(x, 0, x + radius + 1) }
            for x in edgeB..<edgeA { move(0, last); save(x, 0, last) }
            if edgeA <= last { for x in edgeA...last { move(x - radius - 1, last); save(x, x - radius - 1, last) } }
        }
    }

    /// `channels` interleaved planes of width × height blurred with standard deviation `sigma`.
    static func blur(_ pixels: [UInt8], width: Int, height: Int, channels: Int, sigma: Float) -> [UInt8] {
        guard sigma > 0, width > 0, height > 0 else { return pixels }
        let r = boxRadius(sigma: sigma)
        guard r > 0 else { return pixels }
        var image = pixels
        var row = [UInt8](repeating: 0, count: width), column = [UInt8](repeating: 0, count: height)
        for _ in 0..<passes {
            for y in 0..<height {
                for c in 0..<channels {
                    line(image, start: y * width * channels + c, stride: channels, count: width, radius: r, into: &row)
                    for x in 0..<width { image[(y * width + x) * channels + c] = row[x] }
                }
            }
        }
        for _ in 0..<passes {
            for x in 0..<width {
                for c in 0..<channels {
                    line(image, start: x * channels + c, stride: width * channels, count: height, radius: r, into: &column)
                    for y in 0..<height { image[(y * width + x) * channels + c] = column[y] }
                }
            }
        }
        return image
    }
}

extension RGBImage {
    /// The image blurred as Pillow's `ImageFilter.GaussianBlur(radius)` blurs it (`radius` is the
    /// standard deviation in pixels; 0 leaves the image as it is), each channel on its own.
    public func gaussianBlurred(radius: Float) throws -> RGBImage {
        try RGBImage(width: width, height: height, pixels: ExtendedBoxBlur.blur(pixels, width: width, height: height, channels: 3, sigma: radius))
    }
}

extension InitImage {
    /// The image's 8-bit levels (as read from a PNG), `round(255 · v)` clamped.
    var levels: [UInt8] { rgb.map { UInt8(max(0, min(255, ($0 * 255).rounded()))) } }

    init(levels: [UInt8], width: Int, height: Int) {
        self.init(width: width, height: height, rgb: levels.map { Float($0) / 255 })
    }

    /// The image blurred as diffusers' `VaeImageProcessor.blur(image, blur_factor: radius)` does
    /// (Pillow's GaussianBlur on its 8-bit levels), e.g. a mask before inpainting.
    public func gaussianBlurred(radius: Float) -> InitImage {
        InitImage(levels: ExtendedBoxBlur.blur(levels, width: width, height: height, channels: 3, sigma: radius), width: width, height: height)
    }
}

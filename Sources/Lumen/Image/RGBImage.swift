import CLumenPNG
import Foundation
import LumenRuntime

/// Errors reading or writing images, naming the file.
public enum ImageError: Error, Sendable, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case invalidSize(detail: String)
    /// Decoded values that are NaN or infinite cannot become pixels.
    case nonFinite(count: Int, of: Int)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "\(path): cannot read the image: \(reason)"
        case .unwritable(let path, let reason): return "\(path): cannot write the image: \(reason)"
        case .invalidSize(let detail): return "invalid image size: \(detail)"
        case .nonFinite(let count, let total):
            return "\(count) of the image's \(total) decoded values are NaN or infinite (the VAE overflowed?); no image was made"
        }
    }
}

/// An 8-bit RGB image, rows top to bottom.
public struct RGBImage: Sendable, Hashable {
    public let width: Int
    public let height: Int
    /// width × height × 3 bytes.
    public let pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) throws {
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw ImageError.invalidSize(detail: "\(width)x\(height) with \(pixels.count) bytes (expected \(max(0, width * height * 3)))")
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The decoder's output for image `index` of a [B, 3, H, W] tensor in [-1, 1], turned into
    /// pixels as diffusers does: (x / 2 + 0.5) clamped to [0, 1], × 255, rounded half to even.
    public init(decoded t: Tensor, index: Int = 0) throws {
        guard t.shape.rank == 4, t.shape[1] == 3, index >= 0, index < t.shape[0] else {
            throw ImageError.invalidSize(detail: "decoded tensor \(t.shape), image \(index); expected [B, 3, H, W]")
        }
        let h = t.shape[2], w = t.shape[3], plane = h * w
        let values = t.toFloats()
        var out = [UInt8](repeating: 0, count: plane * 3)
        let base = index * 3 * plane
        // NaN survives the clamp below and would trap in the UInt8 conversion.
        let nonFinite = values[base..<(base + 3 * plane)].reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        guard nonFinite == 0 else { throw ImageError.nonFinite(count: nonFinite, of: 3 * plane) }
        for c in 0..<3 {
            for i in 0..<plane {
                let v = min(max(values[base + c * plane + i] / 2 + 0.5, 0), 1)
                out[i * 3 + c] = UInt8((v * 255).rounded(.toNearestOrEven))
            }
        }
        try self.init(width: w, height: h, pixels: out)
    }

    /// Reads a PNG of any colour type and depth (grey, palette, RGB, with or without alpha,
    /// 8 or 16 bits); alpha is dropped, 16-bit samples keep their precision in `normalized`.
    public static func readPNG(_ path: String, maxPixels: Int = 64 << 20) throws -> (image: RGBImage, normalized: [Float]) {
        var img = lumen_png_image()
        var err = [CChar](repeating: 0, count: 512)
        guard lumen_png_read(path, UInt64(maxPixels), &img, &err, err.count) == 0 else {
            throw ImageError.unreadable(path: path, reason: String(cString: err))
        }
        defer { lumen_png_free(&img) }
        let n = Int(img.width) * Int(img.height) * 3
        let samples = UnsafeBufferPointer(start: img.rgb, count: n)
        let normalized = samples.map { Float($0) / 65535 }
        let bytes = samples.map { UInt8((UInt32($0) + 128) / 257) }
        return (try RGBImage(width: Int(img.width), height: Int(img.height), pixels: bytes), normalized)
    }

    /// Writes an 8-bit RGB PNG with text chunks (for example A1111's `parameters`), through a
    /// temporary file renamed into place, so a failed write leaves no half-written file.
    public func writePNG(to path: String, text: [(key: String, value: String)] = []) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        var err = [CChar](repeating: 0, count: 512)
        // tEXt holds Latin-1: characters outside it are written as '?'.
        let latin1 = text.map { (Self.latin1($0.key), Self.latin1($0.value)) }
        let rc = pixels.withUnsafeBufferPointer { px -> Int32 in
            withCStrings(latin1.map(\.0)) { keys in
                withCStrings(latin1.map(\.1)) { values in
                    lumen_png_write_rgb8(tmp, px.baseAddress, UInt32(width), UInt32(height), keys, values,
                                         Int32(latin1.count), &err, err.count)
                }
            }
        }
        guard rc == 0 else {
            unlink(tmp)
            throw ImageError.unwritable(path: path, reason: String(cString: err))
        }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw ImageError.unwritable(path: path, reason: reason)
        }
    }

    private static func latin1(_ s: String) -> [CChar] {
        s.unicodeScalars.map { $0.value < 256 && $0.value != 0 ? CChar(bitPattern: UInt8($0.value)) : 63 } + [0]
    }
}

/// Calls `body` with a C array of pointers to the given NUL-terminated strings.
private func withCStrings<R>(_ strings: [[CChar]], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let buffers = strings.map { s -> UnsafeMutablePointer<CChar> in
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: s.count)
        p.initialize(from: s, count: s.count)
        return p
    }
    defer { buffers.forEach { $0.deallocate() } }
    let pointers: [UnsafePointer<CChar>?] = buffers.map { UnsafePointer($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

import CLumenPNG
import Foundation
import LumenRuntime
#if canImport(Glibc)
import Glibc
#endif

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
        let (image, normalized, _) = try readPNGWithText(path, maxPixels: maxPixels)
        return (image, normalized)
    }

    /// `readPNG` with the file's text chunks (tEXt and zTXt decoded as Latin-1, iTXt as UTF-8), in
    /// file order: A1111 keeps its generation parameters in one named `parameters`.
    public static func readPNGWithText(_ path: String, maxPixels: Int = 64 << 20)
        throws -> (image: RGBImage, normalized: [Float], text: [(key: String, value: String)]) {
        let r = try readPNGWithAlpha(path, maxPixels: maxPixels)
        return (r.image, r.normalized, r.text)
    }

    /// `readPNGWithText` with the file's alpha, width × height values in [0, 1] (16-bit samples
    /// keep their precision), or nil when the file has neither an alpha channel nor a tRNS chunk.
    /// OpenAI's image-edit masks mark the area to repaint by transparency.
    public static func readPNGWithAlpha(_ path: String, maxPixels: Int = 64 << 20)
        throws -> (image: RGBImage, normalized: [Float], text: [(key: String, value: String)], alpha: [Float]?) {
        let fd: Int32
        do { fd = try RegularFile.openForReading(path) } catch let error as FileError {
            throw ImageError.unreadable(path: path, reason: error.reason)
        }
        defer { close(fd) }
        var img = lumen_png_image()
        var err = [CChar](repeating: 0, count: 512)
        guard lumen_png_read(fd, UInt64(maxPixels), &img, &err, err.count) == 0 else {
            throw ImageError.unreadable(path: path, reason: String(cString: err))
        }
        defer { lumen_png_free(&img) }
        let n = Int(img.width) * Int(img.height) * 3
        let samples = UnsafeBufferPointer(start: img.rgb, count: n)
        let normalized = samples.map { Float($0) / 65535 }
        let bytes = samples.map { UInt8((UInt32($0) + 128) / 257) }
        var text: [(key: String, value: String)] = []
        for i in 0..<Int(img.textCount) {
            guard let key = img.textKeys[i], let value = img.textValues[i] else { continue }
            // String(cString:) decodes UTF-8, repairing invalid sequences.
            text.append((latin1String(key), img.textUTF8[i] != 0 ? String(cString: value) : latin1String(value)))
        }
        let alpha = img.alpha.map { a in UnsafeBufferPointer(start: a, count: n / 3).map { Float($0) / 65535 } }
        return (try RGBImage(width: Int(img.width), height: Int(img.height), pixels: bytes), normalized, text, alpha)
    }

    /// Writes an 8-bit RGB PNG with text chunks (for example A1111's `parameters`): tEXt for
    /// Latin-1 text, uncompressed iTXt (UTF-8) for anything else. The file is written through
    /// `AtomicFile` (an exclusive temporary renamed into place), so a failed or interrupted write
    /// leaves no half-written file and a planted link is never followed.
    public func writePNG(to path: String, text: [(key: String, value: String)] = []) throws {
        var err = [CChar](repeating: 0, count: 512)
        // Keywords are Latin-1 by the PNG spec; values are Latin-1 bytes or UTF-8. NUL ends a
        // C string, so it becomes '?'.
        let keys = text.map { Self.latin1($0.key) }
        let utf8 = text.map { t in t.value.unicodeScalars.contains { $0.value > 255 } ? Int32(1) : 0 }
        let values = zip(text, utf8).map { t, u in
            u != 0 ? t.value.utf8.map { $0 == 0 ? 63 : CChar(bitPattern: $0) } + [0] : Self.latin1(t.value)
        }
        let tmp: AtomicFile.Temporary
        do { tmp = try AtomicFile.createTemporary(for: path) } catch let error as FileError {
            throw ImageError.unwritable(path: path, reason: error.reason)
        }
        let rc = pixels.withUnsafeBufferPointer { px -> Int32 in
            withCStrings(keys) { k in
                withCStrings(values) { v in
                    lumen_png_write_rgb8(tmp.fd, px.baseAddress, UInt32(width), UInt32(height), k, v, utf8,
                                         Int32(keys.count), &err, err.count)
                }
            }
        }
        guard rc == 0 else {
            AtomicFile.discard(tmp)
            throw ImageError.unwritable(path: path, reason: String(cString: err))
        }
        do { try AtomicFile.commit(tmp, to: path) } catch let error as FileError {
            throw ImageError.unwritable(path: path, reason: error.reason)
        }
    }

    private static func latin1(_ s: String) -> [CChar] {
        s.unicodeScalars.map { $0.value < 256 && $0.value != 0 ? CChar(bitPattern: UInt8($0.value)) : 63 } + [0]
    }

    private static func latin1String(_ p: UnsafePointer<CChar>) -> String {
        var s = ""
        var q = p
        while q.pointee != 0 {
            s.unicodeScalars.append(Unicode.Scalar(UInt8(bitPattern: q.pointee)))
            q += 1
        }
        return s
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

import Foundation
import Lumen

#if canImport(Glibc)
import Glibc
#endif

/// PNG bytes in and out of memory, through Lumen's public file API and a private temporary
/// folder (mkdtemp: a new folder under a random name, removed after each use). Errors name the
/// field the bytes came from, never the temporary path.
enum PNGCodec {
    private static func withScratch<R>(_ body: (String) throws -> R) throws -> R {
        var template = Array((NSTemporaryDirectory() + "/lumen-serve-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw APIError(status: .internalServerError, message: "cannot create a temporary folder", type: "server_error")
        }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try body(dir + "/image.png")
    }

    static func encode(_ image: RGBImage, text: [(key: String, value: String)] = []) throws -> Data {
        try withScratch { path in
            do { try image.writePNG(to: path, text: text) } catch {
                throw APIError(status: .internalServerError, message: "cannot encode the image as PNG", type: "server_error")
            }
            return try Data(contentsOf: URL(fileURLWithPath: path))
        }
    }

    /// Decodes PNG bytes (`field` names them in errors); larger than `maxPixels` is 413.
    static func decode(_ data: Data, field: String, maxPixels: Int)
        throws -> (image: RGBImage, normalized: [Float], text: [(key: String, value: String)]) {
        let r = try decodeWithAlpha(data, field: field, maxPixels: maxPixels)
        return (r.image, r.normalized, r.text)
    }

    /// `decode` with the alpha channel (nil when the PNG has none), values in [0, 1].
    static func decodeWithAlpha(_ data: Data, field: String, maxPixels: Int)
        throws -> (image: RGBImage, normalized: [Float], text: [(key: String, value: String)], alpha: [Float]?) {
        try withScratch { path in
            try data.write(to: URL(fileURLWithPath: path))
            do {
                return try RGBImage.readPNGWithAlpha(path, maxPixels: maxPixels)
            } catch ImageError.unreadable(_, let reason) {
                let tooLarge = reason.contains("pixels") && (reason.contains("limit") || reason.contains("large") || reason.contains("more than"))
                throw APIError(status: tooLarge ? .contentTooLarge : .badRequest,
                               message: "\(field): not a readable PNG image: \(reason.replacingOccurrences(of: path, with: field))",
                               param: field, code: tooLarge ? "image_too_large" : "invalid_image")
            }
        }
    }

    /// Base64 text, with or without a `data:image/png;base64,` prefix (A1111 accepts both).
    static func decodeBase64(_ text: String, field: String, maxPixels: Int)
        throws -> (image: RGBImage, normalized: [Float], text: [(key: String, value: String)]) {
        try decode(try data(base64: text, field: field), field: field, maxPixels: maxPixels)
    }

    /// The bytes of base64 text, with or without a `data:…;base64,` prefix.
    static func data(base64 text: String, field: String) throws -> Data {
        var s = Substring(text)
        if s.hasPrefix("data:"), let comma = s.firstIndex(of: ",") { s = s[s.index(after: comma)...] }
        guard let data = Data(base64Encoded: String(s), options: .ignoreUnknownCharacters) else {
            throw APIError(status: .badRequest, message: "\(field): not base64 text", param: field, code: "invalid_image")
        }
        return data
    }
}

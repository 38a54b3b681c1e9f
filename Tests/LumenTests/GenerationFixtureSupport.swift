import Foundation
import XCTest

/// The JSON fixtures written by tools/make_generation_fixtures.py (transformers/diffusers/torch as oracle).
enum GenerationFixtures {
    static var folder: String { Fixtures.root + "/generation" }

    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name + ".json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A float32 array stored as base64 of its little-endian bytes.
    static func floats(_ value: Any?) throws -> [Float] {
        let text = try XCTUnwrap(value as? String, "expected a base64 float32 array")
        let data = try XCTUnwrap(Data(base64Encoded: text))
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }
}

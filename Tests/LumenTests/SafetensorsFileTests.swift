import Foundation
import Lumen
import XCTest
import LumenTestSupport

/// Bad files are refused with typed errors that name the file and tensor, never a crash.
final class SafetensorsFileTests: TemporaryDirectoryTestCase {
    /// A file with the given header JSON and `dataBytes` bytes of data.
    private func write(header: String, dataBytes: Int, name: String = "bad.safetensors", lengthOverride: UInt64? = nil) throws -> String {
        var d = Data()
        let h = Data(header.utf8)
        withUnsafeBytes(of: (lengthOverride ?? UInt64(h.count)).littleEndian) { d.append(contentsOf: $0) }
        d.append(h)
        d.append(Data(repeating: 7, count: dataBytes))
        let path = dir + "/" + name
        try d.write(to: URL(fileURLWithPath: path))
        return path
    }

    private func expectMalformed(_ path: String, containing text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafetensorsFile(path: path), file: file, line: line) { error in
            guard case ModelFileError.malformed(let p, let detail) = error else {
                return XCTFail("expected malformed, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(p, path, file: file, line: line)
            XCTAssertTrue(detail.contains(text), "'\(detail)' should mention '\(text)'", file: file, line: line)
        }
    }

    func testRoundTripThroughWriter() throws {
        let a = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, -6], dtype: .f16)
        let b = try Tensor(shape: [4], values: [0.5, 1.5, 2.5, 3.5], dtype: .bf16)
        let c = try Tensor(shape: [2], indices: [7, 9])
        let path = dir + "/ok.safetensors"
        try SafetensorsWriter.write([("a", a), ("b.weight", b), ("ids", c)], metadata: ["format": "pt"], to: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(try f.tensor("a").toFloats(), a.toFloats())
        XCTAssertEqual(try f.tensor("b.weight").toFloats(), b.toFloats())
        XCTAssertEqual(try f.tensor("ids").toInts(), [7, 9])
        XCTAssertThrowsError(try f.tensor("a", shape: [3, 2])) { error in
            XCTAssertEqual(error as? ModelFileError, .wrongShape(path: path, tensor: "a", expected: [3, 2], got: [2, 3]))
        }
        XCTAssertThrowsError(try f.tensor("missing")) { error in
            XCTAssertEqual(error as? ModelFileError, .missingTensor(path: path, tensor: "missing"))
        }
    }

    func testBadHeadersAreTypedErrors() throws {
        let ok = #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        expectMalformed(try write(header: ok, dataBytes: 8, lengthOverride: 10_000), containing: "exceeds")
        expectMalformed(try write(header: ok, dataBytes: 4), containing: "truncated")
        expectMalformed(try write(header: "{\"t\": [", dataBytes: 0), containing: "JSON")
        expectMalformed(try write(header: "[1, 2]", dataBytes: 0), containing: "not a JSON object")
        expectMalformed(try write(header: #"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, dataBytes: 8), containing: "needs")
        expectMalformed(try write(header: #"{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, dataBytes: 8), containing: "dimension")
        expectMalformed(try write(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, dataBytes: 8), containing: "data_offsets")
        expectMalformed(try write(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, dataBytes: 12), containing: "overlap")
        expectMalformed(try write(header: #"{"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, dataBytes: 8), containing: "too large")
        // Shorter than the length field itself.
        let tiny = dir + "/tiny.safetensors"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: tiny))
        expectMalformed(tiny, containing: "shorter")
        let unknown = try write(header: #"{"t":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#, dataBytes: 1)
        XCTAssertThrowsError(try SafetensorsFile(path: unknown)) { error in
            guard case ModelFileError.unsupportedDType(let p, let t, let dt, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual([p, t, dt], [unknown, "t", "F4"])
        }
        XCTAssertThrowsError(try SafetensorsFile(path: dir + "/nope.safetensors")) { error in
            guard case ModelFileError.cannotOpen = error else { return XCTFail("\(error)") }
        }
    }

    func testTypesLumenDoesNotComputeWithLoadButCannotBeUsed() throws {
        // An int8 or f64 entry is valid safetensors: the file opens; asking for it is an error.
        let path = try write(header: #"{"q":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"p":{"dtype":"I64","shape":[1],"data_offsets":[3,11]}}"#, dataBytes: 11)
        let f = try SafetensorsFile(path: path)
        XCTAssertThrowsError(try f.tensor("q")) { error in
            guard case ModelFileError.unsupportedDType(_, let t, let dt, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual([t, dt], ["q", "I8"])
        }
        // A misaligned i64 tensor is copied rather than read through a misaligned pointer.
        XCTAssertEqual(try f.tensor("p").toInts(), [0x0707_0707_0707_0707])
    }

    /// Random mutations of a valid file: every one either opens (and every tensor reads) or
    /// throws a ModelFileError; nothing crashes.
    /// Issue #21 item 5: a header declaring more than 100 MB, or more tensors than the limit, is
    /// refused before the JSON is parsed (2,000,000 empty entries once took 7.9 GB and 30 s).
    func testHeaderLimits() throws {
        let huge = try write(header: "{}", dataBytes: 16, name: "huge.safetensors", lengthOverride: 200_000_000)
        expectMalformed(huge, containing: "limit of 100000000 bytes")
        let count = SafetensorsFile.maxEntries + 2  // one more than the tensors and a __metadata__
        var header = "{"
        header.reserveCapacity(count * 12)
        for i in 0..<count { header += "\"\(i)\":{}," }
        header.removeLast()
        header += "}"
        let many = try write(header: header, dataBytes: 0, name: "many.safetensors")
        let started = Date()
        expectMalformed(many, containing: "more than the limit of \(SafetensorsFile.maxEntries) tensors")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2, "counted without parsing")
        // Metadata keys do not count, colons inside strings neither.
        let fine = try write(header: #"{"__metadata__":{"a:b":"c:d"},"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, dataBytes: 1)
        XCTAssertEqual(try SafetensorsFile(path: fine).names, ["t"])
        let deep = try write(header: String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000), dataBytes: 0, name: "deep.safetensors")
        expectMalformed(deep, containing: "deeper")
    }

    func testNonRegularFilesAreRefused() throws {
        let fifo = dir + "/fifo.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        for path in [fifo, dir!] {
            XCTAssertThrowsError(try SafetensorsFile(path: path)) { error in
                guard case ModelFileError.cannotOpen(let p, let reason) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(p, path)
                XCTAssertTrue(reason.contains("not a regular file"), reason)
            }
        }
    }

    func testFuzzedFilesNeverCrash() throws {
        let source = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tinyFolder + "/vae/diffusion_pytorch_model.safetensors"))
        let headerEnd = 8 + Int(source.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var rng = SplitMix64(seed: 42)
        var opened = 0, refused = 0
        for i in 0..<300 {
            var d = source.prefix(headerEnd + 4096)
            let mutations = Int.random(in: 1...4, using: &rng)
            for _ in 0..<mutations where d.count > 8 {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0:  // flip a byte in the header
                    let at = Int.random(in: 0..<min(headerEnd, d.count), using: &rng)
                    d[at] = UInt8.random(in: 0...255, using: &rng)
                case 1:  // truncate
                    d = d.prefix(Int.random(in: 0..<d.count, using: &rng))
                case 2:  // change a digit in the header
                    if let at = (0..<min(headerEnd, d.count)).shuffled(using: &rng).first(where: { (48...57).contains(d[$0]) }) {
                        d[at] = UInt8.random(in: 48...57, using: &rng)
                    }
                default:  // corrupt the length field
                    d[Int.random(in: 0..<8, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let path = dir + "/fuzz\(i % 4).safetensors"
            try d.write(to: URL(fileURLWithPath: path))
            do {
                let f = try SafetensorsFile(path: path)
                for name in f.names { _ = try? f.tensor(name).toFloats().count }
                opened += 1
            } catch is ModelFileError {
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 100, "most mutations should be refused")
        XCTAssertEqual(opened + refused, 300)
    }
}


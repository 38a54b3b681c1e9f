import LumenRuntime
import XCTest

final class GraphTests: XCTestCase {
    func testShapeInference() throws {
        let g = Graph()
        let x = try g.input("x", shape: [2, 4, 9, 7])
        let w = try g.constant(Tensor(zeros: [6, 4, 3, 3], dtype: .f16))
        let c = try g.conv2d(x, weight: w, stride: 2, padding: 1)
        XCTAssertEqual(c.shape, [2, 6, 5, 4])
        let t = try g.input("t", shape: [5, 8])
        let lw = try g.constant(Tensor(zeros: [3, 8], dtype: .bf16))
        XCTAssertEqual(try g.linear(t, weight: lw).shape, [5, 3])
        XCTAssertEqual(try g.reshape(c, [2, 6, -1]).shape, [2, 6, 20])
        XCTAssertEqual(try g.permute(c, [0, 2, 3, 1]).shape, [2, 5, 4, 6])
        XCTAssertEqual(try g.add(c, try g.input("b", shape: [6, 1, 1])).shape, [2, 6, 5, 4])
        XCTAssertEqual(try g.concat([c, c], axis: 1).shape, [2, 12, 5, 4])
        XCTAssertEqual(try g.upsampleNearest2x(c).shape, [2, 6, 10, 8])
        XCTAssertEqual(try g.chunk(c, parts: 2, axis: 1).map(\.shape), [[2, 3, 5, 4], [2, 3, 5, 4]])
        let ids = try g.input("ids", shape: [2, 77], dtype: .i32)
        let table = try g.constant(Tensor(zeros: [100, 16], dtype: .f16))
        XCTAssertEqual(try g.embedding(ids, table: table).shape, [2, 77, 16])
        let q = try g.input("q", shape: [2, 10, 16])
        let kv = try g.input("kv", shape: [2, 3, 16])
        XCTAssertEqual(try g.attention(query: q, key: kv, value: kv, heads: 4).shape, [2, 10, 16])
        XCTAssertEqual(try g.matmul(try g.input("a", shape: [3, 1, 5, 7]), try g.input("m", shape: [4, 7, 2])).shape, [3, 4, 5, 2])
    }

    func testShapeMismatchesThrowTypedErrors() throws {
        let g = Graph()
        let x = try g.input("x", shape: [1, 4, 8, 8])
        let wrongConv = try g.constant(Tensor(zeros: [6, 5, 3, 3]))
        XCTAssertThrowsError(try g.conv2d(x, weight: wrongConv)) { error in
            guard case LumenError.shapeMismatch(let op, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(op, "conv2d")
        }
        XCTAssertThrowsError(try g.groupNorm(x, groups: 3))
        XCTAssertThrowsError(try g.add(x, try g.input("y", shape: [3, 8])))
        XCTAssertThrowsError(try g.reshape(x, [5, -1]))
        XCTAssertThrowsError(try g.permute(x, [0, 1, 1, 2]))
        XCTAssertThrowsError(try g.input("x", shape: [1]))  // duplicate name
        let ids = try g.input("ids", shape: [3])
        XCTAssertThrowsError(try g.embedding(ids, table: try g.constant(Tensor(zeros: [4, 2])))) { error in
            guard case LumenError.unsupportedDType(_, let dtype, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(dtype, .f32)
        }
        // A value from another graph is refused.
        let other = Graph()
        let foreign = try other.input("z", shape: [1, 4, 8, 8])
        XCTAssertThrowsError(try g.add(x, foreign)) { error in
            guard case LumenError.unknownValue = error else { return XCTFail("\(error)") }
        }
    }

    func testTensorValidation() throws {
        XCTAssertThrowsError(try Tensor(shape: [2, 3], values: [1, 2, 3]))
        XCTAssertThrowsError(try Tensor(shape: [2], values: [1, 2], dtype: .i32))
        let storage = try TensorStorage(byteCount: 8)
        XCTAssertThrowsError(try Tensor(shape: [3], dtype: .f32, storage: storage))
        let t = try Tensor(shape: [2, 2], values: [1, -2, 3.5, 65504], dtype: .f16)
        XCTAssertEqual(t.toFloats(), [1, -2, 3.5, 65504])
        XCTAssertEqual(try t.reshaped([4]).shape, [4])
        XCTAssertThrowsError(try t.reshaped([3]))
    }

    func testTensorCopyOnWrite() throws {
        let a = try Tensor([1, 2, 3])
        var b = a
        try b.withUnsafeMutableBytes { $0.storeBytes(of: Float(9), as: Float.self) }
        XCTAssertEqual(a.toFloats(), [1, 2, 3])
        XCTAssertEqual(b.toFloats(), [9, 2, 3])
    }
}

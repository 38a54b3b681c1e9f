import LumenCPU
import LumenRuntime
import XCTest

final class ExecutorTests: XCTestCase {
    /// A long chain reuses buffers: the program holds far less than one buffer per value, and
    /// the result stays right over repeated runs with new inputs.
    func testBuffersAreReusedByLifetime() throws {
        let g = Graph()
        let x = try g.input("x", shape: [1, 8, 16, 16])
        var h = x
        for _ in 0..<20 { h = try g.add(try g.silu(h), x) }
        let program = try CPUExecutor().compile(g, outputs: [h]) as! CPUProgram
        let valueBytes = 8 * 16 * 16 * 4
        XCTAssertLessThanOrEqual(program.activationBytes, 4 * valueBytes, "activation memory")
        for seed in [1, 2] as [UInt64] {
            let (xt, xd) = try randomTensor(x.shape, seed: seed)
            let got = try program.run(["x": xt])[h]!.toFloats()
            var expected = xd
            for _ in 0..<20 { expected = zip(expected, xd).map { Reference.silu($0) + $1 } }
            assertClose(got, expected, atol: 1e-5, rtol: 1e-5, "chain seed \(seed)")
        }
    }

    func testDiamondAndReshapeViews() throws {
        let g = Graph()
        let x = try g.input("x", shape: [2, 6])
        let r = try g.reshape(x, [3, 4])
        let a = try g.affine(r, multiplier: 3)
        let b = try g.mul(r, r)
        let y = try g.reshape(try g.add(a, b), [12])
        let (xt, xd) = try randomTensor(x.shape, seed: 3)
        let out = try runCPU(g, [y, r], ["x": xt])
        assertClose(out[0], xd.map { 3 * $0 + $0 * $0 }, atol: 1e-6, rtol: 1e-6, "diamond")
        assertClose(out[1], xd, atol: 0, rtol: 0, "reshape of an input is returned as a copy")
    }

    func testRunChecksInputs() throws {
        let g = Graph()
        let x = try g.input("x", shape: [2, 3])
        let y = try g.silu(x)
        let program = try CPUExecutor().compile(g, outputs: [y])
        XCTAssertThrowsError(try program.run([:])) { error in
            XCTAssertEqual(error as? LumenError, .missingInput(name: "x"))
        }
        XCTAssertThrowsError(try program.run(["x": try Tensor(zeros: [3, 2])])) { error in
            guard case LumenError.inputMismatch(let name, _, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(name, "x")
        }
        XCTAssertThrowsError(try program.run(["x": try Tensor(zeros: [2, 3], dtype: .f16)]))
        // An output that is not a value of this graph is refused at compile time.
        let other = Graph()
        let foreign = try other.input("x", shape: [2, 3])
        XCTAssertThrowsError(try CPUExecutor().compile(g, outputs: [foreign])) { error in
            guard case LumenError.unknownValue = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try CPUExecutor().compile(g, outputs: []))
    }

    func testConstantsOfEveryFloatTypeAsOperands() throws {
        let g = Graph()
        let x = try g.input("x", shape: [4])
        let c16 = try g.constant(Tensor(shape: [4], values: [1, 2, 3, 4], dtype: .f16))
        let cb16 = try g.constant(Tensor(shape: [4], values: [0.5, 0.25, 2, 8], dtype: .bf16))
        let y = try g.mul(try g.add(x, c16), cb16)
        let got = try runCPU(g, [y, c16], ["x": try Tensor([1, 1, 1, 1])])
        assertClose(got[0], [1, 0.75, 8, 40], atol: 0, rtol: 0, "f16 and bf16 constants")
        assertClose(got[1], [1, 2, 3, 4], atol: 0, rtol: 0, "a constant as output")
    }
}

final class ExecutorPlanningTests: XCTestCase {
    /// An input declared after other work must not share a buffer with that work: inputs are
    /// copied in before the first step.
    func testLateDeclaredInputKeepsItsValues() throws {
        let g = Graph()
        let a = try g.input("a", shape: [64])
        var h = a
        for _ in 0..<4 { h = try g.silu(try g.affine(h, multiplier: 1.5)) }
        let b = try g.input("b", shape: [64])
        let y = try g.add(h, b)
        let (at, ad) = try randomTensor(a.shape, seed: 1)
        let (bt, bd) = try randomTensor(b.shape, seed: 2)
        let got = try runCPU(g, [y], ["a": at, "b": bt])[0]
        var expected = ad
        for _ in 0..<4 { expected = expected.map { Reference.silu(1.5 * $0) } }
        assertClose(got, zip(expected, bd).map(+), atol: 1e-6, rtol: 1e-6, "late input")
    }
}

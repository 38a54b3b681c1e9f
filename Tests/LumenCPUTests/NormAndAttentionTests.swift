import CLumenCPU
import LumenCPU
import LumenRuntime
import LumenTestSupport
import XCTest

final class NormAndAttentionTests: XCTestCase {
    func testGroupNormWithAndWithoutAffineAndSiLU() throws {
        let cases: [(batch: Int, c: Int, h: Int, w: Int, groups: Int)] = [(2, 6, 7, 13, 3), (1, 320, 9, 11, 32), (2, 64, 16, 16, 32)]
        try forEachInstructionSet { isa in
            for (i, t) in cases.enumerated() {
                for (affine, silu) in [(true, false), (true, true), (false, false), (false, true)] {
                    let g = Graph()
                    let x = try g.input("x", shape: [t.batch, t.c, t.h, t.w])
                    let (gt, gref) = try randomTensor([t.c], dtype: .f16, seed: UInt64(40 + i))
                    let (bt, bref) = try randomTensor([t.c], dtype: .bf16, seed: UInt64(50 + i))
                    let y = try g.groupNorm(x, groups: t.groups, weight: affine ? try g.constant(gt) : nil,
                                            bias: affine ? try g.constant(bt) : nil, eps: 1e-6, silu: silu)
                    // Inputs with an offset, so the mean matters.
                    var xv = randomValues(t.batch * t.c * t.h * t.w, seed: UInt64(60 + i), scale: 3)
                    xv = xv.map { $0 + 2 }
                    let xt = try Tensor(shape: x.shape, values: xv)
                    let got = try runCPU(g, [y], ["x": xt])[0]
                    let expected = Reference.groupNorm(xv.map(Double.init), batch: t.batch, c: t.c, spatial: t.h * t.w,
                                                       groups: t.groups, eps: 1e-6, gamma: affine ? gref : nil,
                                                       beta: affine ? bref : nil, silu: silu)
                    assertClose(got, expected, atol: 1e-5, rtol: 1e-5, "group-norm \(t) affine \(affine) silu \(silu) \(isa)")
                }
            }
        }
    }

    func testLayerNormAndSoftmax() throws {
        try forEachInstructionSet { isa in
            for (rows, d) in [(1, 1), (7, 33), (154, 768), (3, 1000)] {
                let g = Graph()
                let x = try g.input("x", shape: [rows, d])
                let (gt, gref) = try randomTensor([d], dtype: .f16, seed: 70)
                let (bt, bref) = try randomTensor([d], seed: 71)
                let ln = try g.layerNorm(x, weight: try g.constant(gt), bias: try g.constant(bt), eps: 1e-5)
                let lnPlain = try g.layerNorm(x)
                let sm = try g.softmax(x)
                let xv = randomValues(rows * d, seed: 72, scale: 8)
                let out = try runCPU(g, [ln, lnPlain, sm], ["x": try Tensor(shape: [rows, d], values: xv)])
                let xd = xv.map(Double.init)
                if d > 1 {
                    assertClose(out[0], Reference.layerNorm(xd, rows: rows, d: d, eps: 1e-5, gamma: gref, beta: bref),
                                atol: 2e-5, rtol: 1e-5, "layer-norm \(rows)x\(d) \(isa)")
                    assertClose(out[1], Reference.layerNorm(xd, rows: rows, d: d, eps: 1e-5, gamma: nil, beta: nil),
                                atol: 2e-5, rtol: 1e-5, "layer-norm plain \(rows)x\(d) \(isa)")
                }
                assertClose(out[2], Reference.softmax(xd, rows: rows, d: d), atol: 1e-7, rtol: 2e-6, "softmax \(rows)x\(d) \(isa)")
            }
        }
    }

    /// Softmax and layer norm alone in their graphs, so they run over their input in place.
    func testLayerNormAndSoftmaxInPlace() throws {
        try forEachInstructionSet { isa in
            for (rows, d) in [(1, 1), (3, 7), (5, 17), (2, 77), (3, 1000)] {
                let xv = randomValues(rows * d, seed: UInt64(80 + d), scale: 8)
                let xd = xv.map(Double.init)
                for softmax in [true, false] {
                    let g = Graph()
                    let x = try g.input("x", shape: [rows, d])
                    let y = softmax ? try g.softmax(x) : try g.layerNorm(x)
                    let program = try CPUExecutor().compile(g, outputs: [y]) as! CPUProgram
                    XCTAssertEqual(program.activationBytes, rows * d * 4, "expected to run in place")
                    let got = try program.run(["x": try Tensor(shape: [rows, d], values: xv)])[y]!.toFloats()
                    if softmax {
                        assertClose(got, Reference.softmax(xd, rows: rows, d: d), atol: 1e-7, rtol: 2e-6,
                                    "softmax in place \(rows)x\(d) \(isa)")
                    } else if d > 1 {
                        assertClose(got, Reference.layerNorm(xd, rows: rows, d: d, eps: 1e-5, gamma: nil, beta: nil),
                                    atol: 2e-5, rtol: 1e-5, "layer-norm in place \(rows)x\(d) \(isa)")
                    }
                }
            }
        }
    }

    /// Rows whose every logit is far below zero (-250 ± 8; e^-250 underflows f32): softmax is only
    /// finite if it subtracts the row's true maximum. Widths with a partial last group of the
    /// reductions' 64 lanes (77, 130) as well as whole ones (64, 320): a maximum that let the
    /// partial group's unused lanes (or a zero start) count as elements gives NaN here.
    func testSoftmaxOfFarNegativeRows() throws {
        try forEachInstructionSet { isa in
            for (rows, d) in [(3, 7), (2, 64), (2, 77), (2, 130), (2, 320)] {
                let xv = randomValues(rows * d, seed: UInt64(300 + d), scale: 8).map { $0 - 250 }
                let g = Graph()
                let y = try g.softmax(try g.input("x", shape: [rows, d]))
                let got = try runCPU(g, [y], ["x": try Tensor(shape: [rows, d], values: xv)])[0]
                assertClose(got, Reference.softmax(xv.map(Double.init), rows: rows, d: d), atol: 1e-7, rtol: 2e-6,
                            "softmax of far-negative rows \(rows)x\(d) \(isa)")
            }
        }
    }

    func testAttentionSelfCrossAndCausal() throws {
        let cases: [(b: Int, lq: Int, lk: Int, heads: Int, dh: Int, causal: Bool)] = [
            (1, 1, 1, 1, 1, false), (2, 13, 7, 3, 5, false), (2, 77, 77, 4, 16, true), (1, 33, 33, 2, 40, true),
            (2, 300, 77, 8, 40, false), (1, 150, 150, 8, 40, false), (1, 45, 200, 2, 160, false), (1, 140, 140, 1, 64, true),
            // head widths of 3, 5 (ragged) and 10 vectors of 8, query blocks of 72 plus one row
            (2, 73, 65, 3, 24, false), (1, 20, 129, 2, 33, false), (1, 145, 90, 2, 80, true),
            // causal with fewer queries than keys (AVX2 packs a head's keys up to Lq once);
            // AVX2: K^T and V of 1100 keys × 1000 wide exceed the 8 MiB of packing per head, so
            // they are packed one key block at a time (the VAE's 512-wide head at 4096 keys does
            // so); AVX-512 packs nothing but reads heads this wide through many 6-dim tiles
            (1, 50, 140, 2, 40, true), (1, 80, 1100, 1, 1000, false), (1, 30, 4200, 1, 500, false),
            // AVX2: up to 128 keys in one block of whole 16-key groups (128 exactly; 113 with a
            // partial last vector; causal over two query blocks)
            (1, 130, 128, 2, 40, true), (2, 20, 113, 1, 48, false),
        ]
        try forEachInstructionSet { isa in
            for (i, t) in cases.enumerated() { try checkAttention(t, seed: UInt64(80 + i), "attention \(t) \(isa)") }
        }
    }

    /// Random q, k, v (seeds seed, +10, +20) through the executor's attention against the float64
    /// reference.
    func checkAttention(_ t: (b: Int, lq: Int, lk: Int, heads: Int, dh: Int, causal: Bool), seed: UInt64, _ what: String) throws {
        let w = t.heads * t.dh
        let g = Graph()
        let q = try g.input("q", shape: [t.b, t.lq, w])
        let k = try g.input("k", shape: [t.b, t.lk, w])
        let v = try g.input("v", shape: [t.b, t.lk, w])
        let y = try g.attention(query: q, key: k, value: v, heads: t.heads, causal: t.causal)
        let (qt, qref) = try randomTensor(q.shape, seed: seed, scale: 2)
        let (kt, kref) = try randomTensor(k.shape, seed: seed + 10, scale: 2)
        let (vt, vref) = try randomTensor(v.shape, seed: seed + 20)
        let got = try runCPU(g, [y], ["q": qt, "k": kt, "v": vt])[0]
        let expected = Reference.attention(qref, kref, vref, b: t.b, lq: t.lq, lk: t.lk, heads: t.heads, dh: t.dh,
                                           causal: t.causal, scale: 1 / Double(t.dh).squareRoot())
        assertClose(got, expected, atol: 2e-6, rtol: 1e-5, what)
    }

    /// The AVX2 kernel's key block for sequences over 128 keys (LUMEN_ATTN_KEY_BLOCK, for A/B runs
    /// on other L1 sizes): any size from 8 to 128 gives the reference, with partial last blocks,
    /// causal or not; out-of-range sizes fall back to 64.
    func testAttentionKeyBlockSizes() throws {
        XCTAssertEqual(lumen_cpu_set_attention_key_block(7), 64)
        XCTAssertEqual(lumen_cpu_set_attention_key_block(129), 64)
        defer { _ = lumen_cpu_set_attention_key_block(0) }
        let cases: [(b: Int, lq: Int, lk: Int, heads: Int, dh: Int, causal: Bool)] = [
            (1, 70, 300, 2, 40, false), (1, 140, 260, 2, 40, true), (2, 65, 200, 1, 24, false),
        ]
        try forEachInstructionSet { isa in
            for keys in [8, 24, 48, 128] {
                XCTAssertEqual(lumen_cpu_set_attention_key_block(Int32(keys)), Int32(keys))
                for (i, t) in cases.enumerated() {
                    try checkAttention(t, seed: UInt64(180 + i), "attention \(t) key block \(keys) \(isa)")
                }
            }
        }
    }

    func testCausalAttentionIgnoresHiddenOutlierKeys() throws {
        // A key that the causal mask hides from most queries scores far above every visible key
        // (about 450 in base-2 units). The softmax's maximum must come from the visible keys only:
        // taken over the hidden one too, every visible weight would underflow to the exponential's
        // floor and the rows would come out as a plain average of V.
        let (lq, heads, dh) = (90, 2, 8)
        let w = heads * dh
        let qv = randomValues(lq * w, seed: 7, scale: 0.25).map { $0 + 0.75 }  // in [0.5, 1): every score of
        var kv = randomValues(lq * w, seed: 8)                                // the outlier keys is > 300
        for key in [40, 85] { for d in 0..<w { kv[key * w + d] = 150 } }
        let (vt, vref) = try randomTensor([1, lq, w], seed: 3)
        try forEachInstructionSet { isa in
            let g = Graph()
            let q = try g.input("q", shape: [1, lq, w]), k = try g.input("k", shape: [1, lq, w])
            let v = try g.input("v", shape: [1, lq, w])
            let y = try g.attention(query: q, key: k, value: v, heads: heads, causal: true)
            let got = try runCPU(g, [y], ["q": try Tensor(shape: [1, lq, w], values: qv),
                                          "k": try Tensor(shape: [1, lq, w], values: kv), "v": vt])[0]
            let expected = Reference.attention(qv.map(Double.init), kv.map(Double.init), vref, b: 1, lq: lq, lk: lq,
                                               heads: heads, dh: dh, causal: true, scale: 1 / Double(dh).squareRoot())
            assertClose(got, expected, atol: 2e-6, rtol: 1e-5, "causal attention, hidden outlier keys \(isa)")
        }
    }

    func testAttentionMatchesUnfusedGraph() throws {
        // The fused kernel and the same attention spelled out with matmul + softmax agree.
        let (b, l, heads, dh) = (2, 70, 2, 24)
        let g = Graph()
        let q = try g.input("q", shape: [b, l, heads * dh]), k = try g.input("k", shape: [b, l, heads * dh])
        let fused = try g.attention(query: q, key: k, value: k, heads: heads)
        let qh = try g.permute(try g.reshape(q, [b, l, heads, dh]), [0, 2, 1, 3])
        let kh = try g.permute(try g.reshape(k, [b, l, heads, dh]), [0, 2, 1, 3])
        let p = try g.softmax(try g.matmul(qh, kh, transposeB: true, alpha: 1 / Float(dh).squareRoot()))
        let o = try g.reshape(try g.permute(try g.matmul(p, kh), [0, 2, 1, 3]), [b, l, heads * dh])
        let out = try runCPU(g, [fused, o], ["q": try randomTensor(q.shape, seed: 1).0, "k": try randomTensor(k.shape, seed: 2).0])
        assertClose(out[0], out[1].map(Double.init), atol: 2e-6, rtol: 1e-5, "fused vs unfused")
    }
}

import CLumenCPU
import Foundation
import LumenRuntime

/// The kernel call each op becomes. Pointers and sizes are resolved here, once, at compile time.
extension CPUProgram {
    func makeStep(_ n: Node) throws -> Step? {
        let name = n.op.name
        switch n.op {
        case .input, .constant, .reshape:
            return nil

        case .linear(let hasBias):
            let x = try f32(n.inputs[0]), (w, wdt) = try weight(n.inputs[1])
            let bias = hasBias ? try f32(n.inputs[2]) : nil
            let y = try f32(n.id)
            let k = shape(n.inputs[1])[1], nOut = shape(n.inputs[1])[0], m = n.shape.count / nOut
            let tasks = productTasks
            return Step(name: name) { [pool = threadPool] in
                pool.parallelFor(tasks) { t in
                    lumen_linear(x, Int64(k), w, wdt, Int64(k), bias, y, Int64(nOut), Int64(m), Int64(nOut), Int64(k),
                                 0, Int32(t), Int32(tasks))
                }
            }

        case .matmul(let ta, let tb, let alpha):
            return try matmulStep(n, ta, tb, alpha)

        case .conv2d(let p, let hasBias):
            let x = try f32(n.inputs[0]), (w, wdt) = try weight(n.inputs[1])
            let bias = hasBias ? try f32(n.inputs[2]) : nil
            let xs = shape(n.inputs[0]), ws = shape(n.inputs[1])
            let tasks = productTasks
            let (scratch, scratchFloats) = (winogradScratch?.bytes.assumingMemoryBound(to: Float.self), winogradScratchFloats)
            // Runs the convolution, with the Winograd phases where they take it (decided per run: bf16
            // compute, set for the run, and the mode are process-wide) and the scratch holds them.
            let conv: (ThreadPool, UnsafePointer<lumen_conv_epilogue>?, UnsafeMutablePointer<Float>) -> Void = { pool, e, y in
                var plan = lumen_winograd_plan()
                if let scratch,
                   lumen_winograd_plan_make(Int64(xs[0]), Int64(xs[1]), Int64(xs[2]), Int64(xs[3]), Int64(ws[0]),
                                            Int64(ws[2]), Int64(ws[3]), Int64(p.strideH), Int64(p.strideW),
                                            Int64(p.padH), Int64(p.padW), 0, &plan) != 0,
                   plan.scratch_floats <= scratchFloats {
                    withUnsafePointer(to: plan) { pp in
                        for phase in 0..<lumen_winograd_phases(pp) {
                            pool.parallelFor(tasks) { t in
                                lumen_winograd_run_phase(pp, phase, x, w, wdt, bias, y, e, scratch, Int32(t), Int32(tasks))
                            }
                        }
                    }
                    return
                }
                pool.parallelFor(tasks) { t in
                    lumen_conv2d_ex(x, Int64(xs[0]), Int64(xs[1]), Int64(xs[2]), Int64(xs[3]), w, wdt, bias, y,
                                    Int64(ws[0]), Int64(ws[2]), Int64(ws[3]), Int64(p.strideH), Int64(p.strideW),
                                    Int64(p.padH), Int64(p.padW), Int64(n.shape[2]), Int64(n.shape[3]), e, Int32(t), Int32(tasks))
                }
            }
            guard let fused = fusion.epilogues[n.id] else {
                let y = try f32(n.id)
                return Step(name: name) { [pool = threadPool] in conv(pool, nil, y) }
            }
            // The chain's last value lives in the convolution's buffer (ConvFusion checked it).
            let y = try f32(fused.last)
            var epilogue = lumen_conv_epilogue()
            if let r = fused.residual { epilogue.residual = UnsafePointer(try f32(r)) }
            if let (a, b) = fused.affine { epilogue.affine = 1; epilogue.mul = a; epilogue.add = b }
            if let (lo, hi) = fused.clamp { epilogue.clamp = 1; epilogue.lo = lo; epilogue.hi = hi }
            let stepName = ([name] + [fused.residual != nil ? "add" : nil, fused.affine != nil ? "affine" : nil,
                                      fused.clamp != nil ? "clamp" : nil].compactMap { $0 }).joined(separator: "+")
            return Step(name: stepName) { [pool = threadPool] in
                withUnsafePointer(to: epilogue) { e in conv(pool, e, y) }
            }

        case .groupNorm(let groups, let eps, let silu, _):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let gamma = try optionalF32(n, 1), beta = try optionalF32(n, 2)
            let s = n.shape, spatial = s.count / (s[0] * s[1])
            let tasks = min(s[0] * groups, threads * 4)
            return Step(name: name) { [pool = threadPool] in
                pool.parallelFor(tasks) { t in
                    lumen_group_norm(x, y, Int64(s[0]), Int64(s[1]), Int64(spatial), Int64(groups), eps, gamma, beta,
                                     silu ? 1 : 0, Int32(t), Int32(tasks))
                }
            }

        case .layerNorm(let eps, _):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let gamma = try optionalF32(n, 1), beta = try optionalF32(n, 2)
            let d = n.shape.dim(-1), rows = n.shape.count / max(d, 1)
            let tasks = max(1, min(rows, threads * 4))
            return Step(name: name) { [pool = threadPool] in
                pool.parallelFor(tasks) { t in
                    lumen_layer_norm(x, y, Int64(rows), Int64(d), eps, gamma, beta, Int32(t), Int32(tasks))
                }
            }

        case .softmax:
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let d = n.shape.dim(-1), rows = n.shape.count / max(d, 1)
            let tasks = max(1, min(rows, threads * 4))
            return Step(name: name) { [pool = threadPool] in
                pool.parallelFor(tasks) { t in lumen_softmax(x, y, Int64(rows), Int64(d), Int32(t), Int32(tasks)) }
            }

        case .attention(let heads, let causal, let scale):
            let q = try f32(n.inputs[0]), k = try f32(n.inputs[1]), v = try f32(n.inputs[2]), o = try f32(n.id)
            let qs = shape(n.inputs[0]), ks = shape(n.inputs[1])
            let width = qs[2], dh = width / heads
            let items = qs[0] * heads * ((qs[1] + 31) / 32)
            let tasks = max(1, min(items, threads * 8))
            return Step(name: name) { [pool = threadPool] in
                let failed = AtomicFlag()
                pool.parallelFor(tasks) { t in
                    if lumen_attention(q, Int64(width), k, Int64(width), v, Int64(width), o, Int64(width),
                                       Int64(qs[0]), Int64(qs[1]), Int64(ks[1]), Int64(heads), Int64(dh),
                                       scale, causal ? 1 : 0, Int32(t), Int32(tasks)) != 0 {
                        failed.set()
                    }
                }
                if failed.isSet {
                    throw LumenError.outOfMemory(bytes: 4 * dh * 256, detail: "attention scratch for head size \(dh)")
                }
            }

        case .unary(let u):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let code: lumen_unary
            switch u {
            case .silu: code = LUMEN_UNARY_SILU
            case .gelu: code = LUMEN_UNARY_GELU_ERF
            case .geluTanh: code = LUMEN_UNARY_GELU_TANH
            case .quickGelu: code = LUMEN_UNARY_QUICK_GELU
            }
            let count = n.shape.count
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(count) { r in
                    lumen_unary_f32(Int32(code.rawValue), x, y, Int64(r.lowerBound), Int64(r.upperBound))
                }
            }

        case .geglu:
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let d = n.shape.dim(-1), rows = n.shape.count / max(d, 1)
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(rows, minChunk: max(1, 4096 / max(d, 1))) { r in
                    lumen_geglu(x, y, Int64(rows), Int64(d), Int64(r.lowerBound), Int64(r.upperBound))
                }
            }

        case .binary(let op):
            return try binaryStep(n, op)

        case .affine(let a, let b):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let count = n.shape.count
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(count) { r in
                    for i in r { y[i] = x[i] * a + b }
                }
            }

        case .clamp(let lower, let upper):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let count = n.shape.count
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(count) { r in
                    for i in r { y[i] = Swift.min(Swift.max(x[i], lower), upper) }
                }
            }

        case .concat(let axis):
            let y = try f32(n.id)
            let inner = n.shape.dims[(axis + 1)...].reduce(1, *)
            let outer = n.shape.dims[..<axis].reduce(1, *)
            let parts = try n.inputs.map { (try f32($0), shape($0)[axis] * inner) }
            let rowOut = n.shape[axis] * inner
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(outer, minChunk: 1) { r in
                    for o in r {
                        var offset = o * rowOut
                        for (src, len) in parts {
                            (y + offset).update(from: src + o * len, count: len)
                            offset += len
                        }
                    }
                }
            }

        case .upsampleNearest2x:
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let xs = shape(n.inputs[0])
            let planes = xs[0] * xs[1], h = xs[2], w = xs[3]
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(planes, minChunk: 1) { r in
                    for p in r {
                        let src = x + p * h * w, dst = y + p * h * w * 4
                        for i in 0..<h {
                            let row = dst + (2 * i) * 2 * w
                            for j in 0..<w {
                                let v = src[i * w + j]
                                row[2 * j] = v
                                row[2 * j + 1] = v
                            }
                            (row + 2 * w).update(from: row, count: 2 * w)
                        }
                    }
                }
            }

        case .resizeNearest(let oh, let ow):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let xs = shape(n.inputs[0])
            let planes = xs[0] * xs[1], h = xs[2], w = xs[3]
            // PyTorch computes the scale in f32 and floors dst · scale.
            let rows = (0..<oh).map { min(Int((Float(h) / Float(oh) * Float($0)).rounded(.down)), h - 1) }
            let cols = (0..<ow).map { min(Int((Float(w) / Float(ow) * Float($0)).rounded(.down)), w - 1) }
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(planes, minChunk: 1) { r in
                    for p in r {
                        let src = x + p * h * w, dst = y + p * oh * ow
                        for i in 0..<oh {
                            let srow = src + rows[i] * w, drow = dst + i * ow
                            for j in 0..<ow { drow[j] = srow[cols[j]] }
                        }
                    }
                }
            }

        case .pad(let top, _, let left, _):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let xs = shape(n.inputs[0])
            let planes = xs[0] * xs[1], h = xs[2], w = xs[3], oh = n.shape[2], ow = n.shape[3]
            return Step(name: name) { [pool = threadPool] in
                pool.parallelRanges(planes, minChunk: 1) { r in
                    for p in r {
                        let dst = y + p * oh * ow
                        dst.update(repeating: 0, count: oh * ow)
                        for i in 0..<h { (dst + (i + top) * ow + left).update(from: x + (p * h + i) * w, count: w) }
                    }
                }
            }

        case .timestepEmbedding(let p):
            let t = try f32(n.inputs[0]), y = try f32(n.id)
            let count = n.shape[0]
            return Step(name: name) {
                timestepEmbedding(t, count: count, p, into: y)
            }

        case .permute(let order):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let plan = PermutePlan(input: shape(n.inputs[0]), order: order)
            return Step(name: name) { [pool = threadPool] in plan.run(x, y, pool: pool) }

        case .slice(let axis, let start, let length):
            let x = try f32(n.inputs[0]), y = try f32(n.id)
            let xs = shape(n.inputs[0])
            let inner = xs.dims[(axis + 1)...].reduce(1, *)
            let outer = xs.dims[..<axis].reduce(1, *)
            let rowIn = xs[axis] * inner, rowOut = length * inner
            return Step(name: name) {
                for o in 0..<outer { (y + o * rowOut).update(from: x + o * rowIn + start * inner, count: rowOut) }
            }

        case .embedding:
            let ids = try rawPointer(n.inputs[0], f32: false).assumingMemoryBound(to: Int32.self)
            let (table, tdt) = try weight(n.inputs[1])
            let ts = shape(n.inputs[1])
            let y = try f32(n.id)
            let count = shape(n.inputs[0]).count, vocab = ts[0], d = ts[1]
            let rowBytes = d * graph.nodes[n.inputs[1]].dtype.size
            return Step(name: name) {
                for i in 0..<count {
                    let id = Int(ids[i])
                    guard id >= 0, id < vocab else {
                        throw LumenError.invalidArgument(op: "embedding", detail: "id \(id) at position \(i) is outside the table of \(vocab) rows")
                    }
                    lumen_convert_to_f32(table + id * rowBytes, tdt, y + i * d, Int64(d))
                }
            }
        }
    }
}

/// A flag set from any worker thread.
final class AtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    func set() { lock.lock(); flag = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}

/// diffusers' `get_timestep_embedding`, computed in f32 as PyTorch does.
func timestepEmbedding(_ t: UnsafePointer<Float>, count: Int, _ p: TimestepEmbeddingParameters,
                       into y: UnsafeMutablePointer<Float>) {
    let half = p.dim / 2
    let base = -Float(log(Double(p.maxPeriod)))
    var freqs = [Float](repeating: 0, count: half)
    for i in 0..<half {
        freqs[i] = Float(exp(Double(base * Float(i) / (Float(half) - p.downscaleFreqShift))))
    }
    for r in 0..<count {
        let row = y + r * p.dim
        for i in 0..<half {
            let arg = p.scale * (t[r] * freqs[i])
            let s = Float(sin(Double(arg))), c = Float(cos(Double(arg)))
            if p.flipSinToCos {
                row[i] = c
                row[half + i] = s
            } else {
                row[i] = s
                row[half + i] = c
            }
        }
        if p.dim % 2 == 1 { row[p.dim - 1] = 0 }
    }
}

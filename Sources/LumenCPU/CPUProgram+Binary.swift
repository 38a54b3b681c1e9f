import CLumenCPU
import LumenRuntime

extension CPUProgram {
    /// Elementwise op with broadcasting. Dimensions are coalesced first, so the common cases
    /// (same shapes; a per-channel or per-image vector added to NCHW) run as long inner loops.
    func binaryStep(_ n: Node, _ op: BinaryOp) throws -> Step {
        let a = try f32(n.inputs[0]), b = try f32(n.inputs[1]), y = try f32(n.id)
        let plan = BroadcastPlan(out: n.shape, a: shape(n.inputs[0]), b: shape(n.inputs[1]))
        return Step(name: op.rawValue) { [pool = threadPool] in
            pool.parallelRanges(plan.rows, minChunk: max(1, 8192 / max(plan.inner, 1))) { rows in
                for r in rows {
                    let (oa, ob) = plan.offsets(row: r)
                    let pa = a + oa, pb = b + ob, py = y + r * plan.inner
                    let n = plan.inner
                    switch (plan.innerA, plan.innerB, op) {
                    case (1, 1, .add): for i in 0..<n { py[i] = pa[i] + pb[i] }
                    case (1, 1, .mul): for i in 0..<n { py[i] = pa[i] * pb[i] }
                    case (1, 0, .add): let v = pb[0]; for i in 0..<n { py[i] = pa[i] + v }
                    case (1, 0, .mul): let v = pb[0]; for i in 0..<n { py[i] = pa[i] * v }
                    case (0, 1, .add): let v = pa[0]; for i in 0..<n { py[i] = v + pb[i] }
                    case (0, 1, .mul): let v = pa[0]; for i in 0..<n { py[i] = v * pb[i] }
                    default:
                        let sa = plan.innerA, sb = plan.innerB
                        for i in 0..<n { py[i] = apply(op, pa[i * sa], pb[i * sb]) }
                    }
                }
            }
        }
    }
}

@inline(__always)
private func apply(_ op: BinaryOp, _ x: Float, _ y: Float) -> Float {
    switch op {
    case .add: return x + y
    case .sub: return x - y
    case .mul: return x * y
    case .div: return x / y
    }
}

/// Strides of two broadcast operands over an output, with adjacent dimensions merged where
/// both operands allow it. The last merged dimension is the inner loop.
struct BroadcastPlan {
    let inner: Int
    let innerA: Int, innerB: Int
    let rows: Int
    let outerDims: [Int]
    let outerA: [Int], outerB: [Int]

    init(out: Shape, a: Shape, b: Shape) {
        func strides(_ s: Shape) -> [Int] {
            let r = out.rank
            let padded = [Int](repeating: 1, count: r - s.rank) + s.dims
            var st = [Int](repeating: 0, count: r)
            var acc = 1
            for i in stride(from: r - 1, through: 0, by: -1) {
                st[i] = padded[i] == 1 && out[i] != 1 ? 0 : acc
                acc *= padded[i]
            }
            return st
        }
        var dims = out.dims, sa = strides(a), sb = strides(b)
        if dims.isEmpty { dims = [1]; sa = [0]; sb = [0] }
        // Merge dimension i into i+1 when both operands are contiguous across the pair.
        var i = dims.count - 2
        while i >= 0 {
            let mergeable = (sa[i] == sa[i + 1] * dims[i + 1]) && (sb[i] == sb[i + 1] * dims[i + 1])
            if mergeable || dims[i] == 1 {
                if dims[i] != 1 || mergeable {
                    dims[i + 1] *= dims[i]
                }
                dims.remove(at: i); sa.remove(at: i); sb.remove(at: i)
            }
            i -= 1
        }
        inner = dims.last!
        innerA = sa.last!
        innerB = sb.last!
        outerDims = Array(dims.dropLast())
        outerA = Array(sa.dropLast())
        outerB = Array(sb.dropLast())
        rows = outerDims.reduce(1, *)
    }

    @inline(__always)
    func offsets(row: Int) -> (Int, Int) {
        var r = row, oa = 0, ob = 0
        for d in stride(from: outerDims.count - 1, through: 0, by: -1) {
            let idx = r % outerDims[d]
            r /= outerDims[d]
            oa += idx * outerA[d]
            ob += idx * outerB[d]
        }
        return (oa, ob)
    }
}

/// A general axis permutation, copied with the innermost output axis as the inner loop.
struct PermutePlan {
    let outDims: [Int]
    let inStrides: [Int]

    init(input: Shape, order: [Int]) {
        let s = input.strides
        outDims = order.map { input[$0] }
        inStrides = order.map { s[$0] }
    }

    func run(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard let inner = outDims.last else { y[0] = x[0]; return }
        let innerStride = inStrides.last!
        let rows = outDims.dropLast().reduce(1, *)
        pool.parallelRanges(rows, minChunk: max(1, 4096 / max(inner, 1))) { range in
            for r in range {
                var rem = r, off = 0
                for d in stride(from: outDims.count - 2, through: 0, by: -1) {
                    off += (rem % outDims[d]) * inStrides[d]
                    rem /= outDims[d]
                }
                let dst = y + r * inner
                let src = x + off
                for i in 0..<inner { dst[i] = src[i * innerStride] }
            }
        }
    }
}

import CLumenCPU
import LumenRuntime

extension CPUProgram {
    /// Batched product of two activations; leading dimensions broadcast. Many small matrices
    /// are spread over threads one matrix each, a few large ones are split inside the kernel.
    func matmulStep(_ n: Node, _ ta: Bool, _ tb: Bool, _ alpha: Float) throws -> Step {
        let a = try f32(n.inputs[0]), b = try f32(n.inputs[1]), c = try f32(n.id)
        let sa = shape(n.inputs[0]), sb = shape(n.inputs[1])
        let m = n.shape.dim(-2), nn = n.shape.dim(-1)
        let k = ta ? sa.dim(-2) : sa.dim(-1)
        let lda = sa.dim(-1), ldb = sb.dim(-1)
        let batchShape = Shape(Array(n.shape.dims.dropLast(2)))
        let batches = batchShape.count
        let aIndex = broadcastIndices(out: batchShape, operand: Shape(Array(sa.dims.dropLast(2))))
        let bIndex = broadcastIndices(out: batchShape, operand: Shape(Array(sb.dims.dropLast(2))))
        let aMat = sa.dim(-2) * sa.dim(-1), bMat = sb.dim(-2) * sb.dim(-1)
        let threads = self.threads, tasks = productTasks
        return Step(name: "matmul") { [pool = threadPool] in
            func one(_ i: Int, task: Int, tasks: Int) {
                let oa = aIndex[i], ob = bIndex[i]
                lumen_matmul_f32(a + oa * aMat, Int64(lda), ta ? 1 : 0, b + ob * bMat, Int64(ldb), tb ? 1 : 0,
                                 c + i * m * nn, Int64(nn), Int64(m), Int64(nn), Int64(k), alpha,
                                 Int32(task), Int32(tasks))
            }
            if batches >= threads {
                pool.parallelFor(batches) { i in one(i, task: 0, tasks: 1) }
            } else {
                for i in 0..<batches { pool.parallelFor(tasks) { t in one(i, task: t, tasks: tasks) } }
            }
        }
    }
}

/// For each index of `out` (row-major), the index of the operand element it reads when the
/// operand is broadcast to `out`.
func broadcastIndices(out: Shape, operand: Shape) -> [Int] {
    let r = out.rank
    let padded = [Int](repeating: 1, count: r - operand.rank) + operand.dims
    let strides = Shape(padded).strides
    return (0..<out.count).map { flat in
        var rem = flat, idx = 0
        for d in stride(from: r - 1, through: 0, by: -1) {
            let i = rem % out[d]
            rem /= out[d]
            if padded[d] != 1 { idx += i * strides[d] }
        }
        return idx
    }
}

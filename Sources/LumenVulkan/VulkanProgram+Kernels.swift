import CVulkan
import Foundation
import LumenRuntime

/// The kernel dispatches each op becomes. Sizes, strides and tile shapes are resolved here, once.
extension VulkanProgram {
    static let elementwiseGroup = 256

    func makeDispatches(_ n: Node) throws {
        let name = n.op.name
        let out = { try self.ref(n.id, role: "output of \(name)") }
        switch n.op {
        case .input, .constant, .reshape:
            return

        case .linear(let hasBias):
            let x = try act(n.inputs[0], role: "linear input"), (w, wdt) = try weight(n.inputs[1], role: "linear weight")
            let bias = hasBias ? try param(n.inputs[2], role: "linear bias") : dummyRef
            let ws = shape(n.inputs[1])
            let k = ws[1], nOut = ws[0], m = n.shape.count / max(nOut, 1)
            try gemm(name, a: x, b: w, wdt: wdt, bias: bias, c: try out(), m: m, n: nOut, k: k,
                     sam: k, sak: 1, sbk: 1, sbn: k, hasBias: hasBias, alpha: 1, batch: BatchPlan.single)

        case .matmul(let ta, let tb, let alpha):
            let sa = shape(n.inputs[0]), sb = shape(n.inputs[1])
            let a = try act(n.inputs[0], role: "matmul operand"), (b, bdt) = try weight(n.inputs[1], role: "matmul operand")
            let m = n.shape.dim(-2), nn = n.shape.dim(-1), k = ta ? sa.dim(-2) : sa.dim(-1)
            let lda = sa.dim(-1), ldb = sb.dim(-1)
            let batch = try BatchPlan(out: Shape(Array(n.shape.dims.dropLast(2))), a: Shape(Array(sa.dims.dropLast(2))),
                                      aMatrix: sa.dim(-2) * lda, b: Shape(Array(sb.dims.dropLast(2))), bMatrix: sb.dim(-2) * ldb)
            try gemm(name, a: a, b: b, wdt: bdt, bias: dummyRef, c: try out(), m: m, n: nn, k: k,
                     sam: ta ? 1 : lda, sak: ta ? lda : 1, sbk: tb ? 1 : ldb, sbn: tb ? ldb : 1,
                     hasBias: false, alpha: alpha, batch: batch)

        case .conv2d(let p, let hasBias):
            let xs = shape(n.inputs[0]), ws = shape(n.inputs[1])
            let x = try act(n.inputs[0], role: "conv2d input"), (w, wdt) = try weight(n.inputs[1], role: "conv2d weight")
            let bias = hasBias ? try param(n.inputs[2], role: "conv2d bias") : dummyRef
            let y = try out()
            let o = ws[0], spatial = n.shape[2] * n.shape[3]
            let push = [xs[1], xs[2], xs[3], o, ws[2], ws[3], n.shape[2], n.shape[3],
                        p.strideH, p.strideW, p.padH, p.padW, hasBias ? 1 : 0].map { UInt32($0) }
            let tableKey = [xs[1], xs[2], xs[3], ws[2], ws[3]]
            let table = try gatherTables[tableKey] ?? hostConstant(
                Self.convGatherTable(channels: xs[1], height: xs[2], width: xs[3], kh: ws[2], kw: ws[3]))
            gatherTables[tableKey] = table
            if try vectorConvIfAligned(name, x: x, xs: xs, w: w, wdt: wdt, ws: ws, bias: bias, hasBias: hasBias,
                                       y: y, outShape: n.shape, p: p, table: table) { return }
            if usesTensorCores(m: o, n: spatial, k: xs[1] * ws[2] * ws[3], batch: xs[0]) {
                let t = TensorCoreTiles.self
                try dispatch(name, "conv2d_coopmat", spec: t.spec(wdt: wdt), bindings: [x, w, bias, y, table], writes: [y],
                             push: push, groups: (ceilDiv(spatial, t.bn), ceilDiv(o, t.bm), xs[0]))
                return
            }
            let t = GemmTiles.choose(m: o, n: spatial)
            try dispatch(name, "conv2d", spec: t.spec(wdt: wdt), bindings: [x, w, bias, y, table], writes: [y],
                         push: push, groups: (ceilDiv(spatial, t.bn), ceilDiv(o, t.bm), xs[0]))

        case .groupNorm(let groups, let eps, let silu, let affine):
            let s = n.shape, spatial = s.count / max(s[0] * s[1], 1)
            let x = try act(n.inputs[0], role: "group-norm input"), y = try out()
            let g = affine ? try param(n.inputs[1], role: "group-norm weight") : dummyRef
            let b = affine ? try param(n.inputs[2], role: "group-norm bias") : dummyRef
            try dispatch(name, reductionKernel("groupnorm"), spec: [256], bindings: [x, g, b, y], writes: [y],
                         push: [UInt32(s[1]), UInt32(spatial), UInt32(groups), affine ? 1 : 0, silu ? 1 : 0, eps.bitPattern],
                         groups: (groups, s[0], 1))

        case .layerNorm(let eps, let affine):
            let d = n.shape.dim(-1), rows = n.shape.count / max(d, 1)
            let x = try act(n.inputs[0], role: "layer-norm input"), y = try out()
            let g = affine ? try param(n.inputs[1], role: "layer-norm weight") : dummyRef
            let b = affine ? try param(n.inputs[2], role: "layer-norm bias") : dummyRef
            let push = [UInt32(rows), UInt32(d), affine ? 1 : 0, eps.bitPattern]
            if let wg = subgroupRowGroup(d) {
                try dispatch(name, "layernorm_rows", spec: [UInt32(wg)], bindings: [x, g, b, y], writes: [y], push: push,
                             groups: (min(ceilDiv(rows, wg / context.info.subgroupSize), 65535), 1, 1))
            } else {
                try dispatch(name, reductionKernel("layernorm"), spec: [UInt32(rowGroupSize(d))], bindings: [x, g, b, y],
                             writes: [y], push: push, groups: (min(rows, 65535), 1, 1))
            }

        case .softmax:
            let d = n.shape.dim(-1), rows = n.shape.count / max(d, 1)
            let x = try act(n.inputs[0], role: "softmax input"), y = try out()
            if let wg = subgroupRowGroup(d) {
                try dispatch(name, "softmax_rows", spec: [UInt32(wg)], bindings: [x, y], writes: [y],
                             push: [UInt32(rows), UInt32(d)], groups: (min(ceilDiv(rows, wg / context.info.subgroupSize), 65535), 1, 1))
            } else {
                try dispatch(name, reductionKernel("softmax"), spec: [UInt32(rowGroupSize(d))], bindings: [x, y], writes: [y],
                             push: [UInt32(rows), UInt32(d)], groups: (min(rows, 65535), 1, 1))
            }

        case .attention(let heads, let causal, let scale):
            let qs = shape(n.inputs[0]), ks = shape(n.inputs[1])
            let q = try act(n.inputs[0], role: "attention query"), k = try act(n.inputs[1], role: "attention key")
            let v = try act(n.inputs[2], role: "attention value"), o = try out()
            let width = qs[2], dh = width / heads
            let push: [UInt32] = [UInt32(qs[1]), UInt32(ks[1]), UInt32(heads), UInt32(width), causal ? 1 : 0, scale.bitPattern]
            // Attention on tensor cores was faster than the scalar f16 kernels at every measured
            // shape on the H200 (4096 queries and keys: 5.95 vs 9.66 ms; 77 keys: 0.21 vs 0.31 ms).
            if options.attentionKernel == nil, !causal, tensorCoresUsable, dh % 8 == 0, width % 8 == 0,
               options.checkingTensorCores || context.tensorCoreAttention == .passed,
               let t = TensorCoreAttention.shape(headSize: dh, sharedBytes: Int(context.limits.maxComputeSharedMemorySize)) {
                let dhp = TensorCoreAttention.paddedHeadSize(dh)
                try dispatch(name, "attention_coopmat", spec: [32 * t.subgroups, t.subgroups, dh, dhp, t.keys].map { UInt32($0) },
                             bindings: [q, k, v, o, k, v], writes: [o], push: push,
                             groups: (ceilDiv(qs[1], 16 * t.subgroups), qs[0] * heads, 1))
                return
            }
            let kernel = options.attentionKernel ?? (dh <= 64 ? .rows : .split)
            switch kernel {
            case .rows:
                let wg = 64
                let bkv = min(32, Int(context.limits.maxComputeSharedMemorySize) / (8 * dh))
                guard bkv >= 1 else {
                    throw LumenError.invalidArgument(op: name, detail: "head size \(dh) needs more shared memory than the device has")
                }
                try dispatch(name, "attention_rows", spec: [wg, bkv, dh].map { UInt32($0) }, bindings: [q, k, v, o], writes: [o],
                             push: push, groups: (ceilDiv(qs[1], wg), qs[0] * heads, 1))
            case .split:
                let t = try AttentionTiles.choose(headSize: dh, limits: context.limits)
                try dispatch(name, "attention", spec: [t.workgroup, t.bq, t.bkv, dh, t.dpt].map { UInt32($0) },
                             bindings: [q, k, v, o], writes: [o], push: push, groups: (ceilDiv(qs[1], t.bq), qs[0] * heads, 1))
            }

        case .unary(let u):
            let code: UInt32
            switch u {
            case .silu: code = 0
            case .gelu: code = 1
            case .geluTanh: code = 2
            case .quickGelu: code = 3
            }
            try elementwise(n, code: code, mul: 1, add: 0)

        case .affine(let mul, let add):
            try elementwise(n, code: 4, mul: mul, add: add)

        case .clamp(let lower, let upper):
            try elementwise(n, code: 5, mul: lower, add: upper)

        case .resizeNearest(let oh, let ow):
            let xs = shape(n.inputs[0])
            let h = xs[2], w = xs[3]
            // PyTorch's source index: ⌊dst · (in / out)⌋ with the scale in f32.
            let rows = (0..<oh).map { Int32(min(Int((Float(h) / Float(oh) * Float($0)).rounded(.down)), h - 1)) }
            let cols = (0..<ow).map { Int32(min(Int((Float(w) / Float(ow) * Float($0)).rounded(.down)), w - 1)) }
            try gather2d(n, rows: rows, cols: cols)

        case .pad(let top, _, let left, _):
            let xs = shape(n.inputs[0])
            let h = xs[2], w = xs[3]
            let rows = (0..<n.shape[2]).map { $0 - top >= 0 && $0 - top < h ? Int32($0 - top) : -1 }
            let cols = (0..<n.shape[3]).map { $0 - left >= 0 && $0 - left < w ? Int32($0 - left) : -1 }
            try gather2d(n, rows: rows, cols: cols)

        case .geglu:
            let x = try act(n.inputs[0], role: "geglu input"), y = try out()
            let count = n.shape.count
            try dispatch(name, "geglu", spec: [UInt32(Self.elementwiseGroup)], bindings: [x, y], writes: [y],
                         push: [UInt32(count), UInt32(n.shape.dim(-1))], groups: (gridGroups(count), 1, 1))

        case .binary(let op):
            let code: UInt32
            switch op {
            case .add: code = 0
            case .sub: code = 1
            case .mul: code = 2
            case .div: code = 3
            }
            let a = try act(n.inputs[0], role: "\(name) operand"), b = try act(n.inputs[1], role: "\(name) operand")
            let y = try out()
            let sa = broadcastStrides(out: n.shape, operand: shape(n.inputs[0]))
            let sb = broadcastStrides(out: n.shape, operand: shape(n.inputs[1]))
            var (dims, strides) = coalesce(dims: n.shape.dims, strides: [sa, sb])
            guard dims.count <= 6 else {
                throw LumenError.invalidArgument(op: name, detail: "broadcast of \(shape(n.inputs[0])) and \(shape(n.inputs[1])) needs \(dims.count) dimensions; the kernel handles 6")
            }
            while dims.count < 6 { dims.insert(1, at: 0); strides[0].insert(0, at: 0); strides[1].insert(0, at: 0) }
            let count = n.shape.count
            try dispatch(name, "binary", spec: [UInt32(Self.elementwiseGroup), code], bindings: [a, b, y], writes: [y],
                         push: ([count] + dims + strides[0] + strides[1]).map { UInt32($0) },
                         groups: (gridGroups(count), 1, 1))

        case .concat(let axis):
            let y = try out()
            let inner = n.shape.dims[(axis + 1)...].reduce(1, *)
            let outer = n.shape.dims[..<axis].reduce(1, *)
            let rowOut = n.shape[axis] * inner
            var offset = 0
            for i in n.inputs {
                let len = shape(i)[axis] * inner
                try copy(name, from: try act(i, role: "concat operand"), to: y, dims: [outer, len],
                         src: [len, 1], dst: [rowOut, 1], srcOffset: 0, dstOffset: offset)
                offset += len
            }

        case .upsampleNearest2x:
            let xs = shape(n.inputs[0])
            let h = xs[2], w = xs[3]
            try copy(name, from: try act(n.inputs[0], role: "upsample input"), to: try out(),
                     dims: [xs[0] * xs[1], h, 2, w, 2], src: [h * w, w, 0, 1, 0], dst: [4 * h * w, 4 * w, 2 * w, 2, 1],
                     srcOffset: 0, dstOffset: 0)

        case .timestepEmbedding(let p):
            let half = p.dim / 2
            // The frequencies as the reference computes them (in double, rounded to f32).
            let base = -Float(log(Double(p.maxPeriod)))
            let freqs = (0..<half).map { i in Float(exp(Double(base * Float(i) / (Float(half) - p.downscaleFreqShift)))) }
            let (t, tdt) = try weight(n.inputs[0], role: "timesteps")
            let f = try hostConstant(freqs.withUnsafeBytes { Array($0) }), y = try out()
            let count = n.shape.count
            try dispatch(name, "timestep", spec: [UInt32(Self.elementwiseGroup), tdt], bindings: [t, f, y], writes: [y],
                         push: [UInt32(count), UInt32(p.dim), UInt32(half), p.flipSinToCos ? 1 : 0, p.scale.bitPattern],
                         groups: (gridGroups(count), 1, 1))

        case .permute(let order):
            let xs = shape(n.inputs[0])
            let s = xs.strides
            try copy(name, from: try act(n.inputs[0], role: "permute input"), to: try out(),
                     dims: order.map { xs[$0] }, src: order.map { s[$0] }, dst: n.shape.strides, srcOffset: 0, dstOffset: 0)

        case .slice(let axis, let start, let length):
            let xs = shape(n.inputs[0])
            let inner = xs.dims[(axis + 1)...].reduce(1, *)
            let outer = xs.dims[..<axis].reduce(1, *)
            try copy(name, from: try act(n.inputs[0], role: "slice input"), to: try out(),
                     dims: [outer, length * inner], src: [xs[axis] * inner, 1], dst: [length * inner, 1],
                     srcOffset: start * inner, dstOffset: 0)

        case .embedding:
            let ts = shape(n.inputs[1])
            try addIdCheck(ids: n.inputs[0], vocab: ts[0])
            let ids = try ref(n.inputs[0], role: "embedding ids"), (table, wdt) = try weight(n.inputs[1], role: "embedding table")
            let y = try out()
            let count = n.shape.count
            try dispatch(name, "embedding", spec: [UInt32(Self.elementwiseGroup), wdt], bindings: [ids, table, y], writes: [y],
                         push: [UInt32(count), UInt32(ts[1]), UInt32(ts[0])], groups: (gridGroups(count), 1, 1))
        }
    }

    func shape(_ id: Int) -> Shape { graph.nodes[id].shape }

    /// The convolution kernels' gather table: for each k = (c, ky, kx) of the implicit GEMM, the
    /// input offset c·H·W + ky·W + kx and (ky << 16 | kx), as pairs of Int32 (Shaders/conv2d.comp).
    static func convGatherTable(channels: Int, height: Int, width: Int, kh: Int, kw: Int) -> [UInt8] {
        var table: [Int32] = []
        table.reserveCapacity(2 * channels * kh * kw)
        for c in 0..<channels {
            for ky in 0..<kh {
                for kx in 0..<kw {
                    table.append(Int32(c * height * width + ky * width + kx))
                    table.append(Int32(ky << 16 | kx))
                }
            }
        }
        return table.withUnsafeBytes { Array($0) }
    }

    /// Whether this program may use the tensor-core kernels at all: f16 activations, a device
    /// with them, not turned off, and passed their check here (or being checked).
    var tensorCoresUsable: Bool {
        act16 && context.cooperativeMatrix && options.tensorCores == .auto
            && (options.checkingTensorCores || context.tensorCoreCheck == .passed)
    }

    /// Whether a GEMM (or a convolution as one) of these sizes runs on the tensor-core kernels:
    /// only in programs whose activations are f16 already (the kernels round their operands to
    /// f16), on a device that has them, after they passed their check on this device (or while
    /// being checked), and for grids of at least 64 of their 128×128 tiles. On the H200 every
    /// measured shape with 64 or more tiles ran faster on them than on the scalar f16 kernels
    /// (conv 320→320 at 64², 96 tiles: 2.47 vs 2.99 ms) and every shape with fewer ran slower
    /// (conv 640→640 at 32², 40 tiles: 5.80 vs 4.96 ms; 1280→1280 at 8², 10 tiles: 11.9 vs 5.6 ms),
    /// for want of split-K (docs/vulkan.md).
    func usesTensorCores(m: Int, n: Int, k: Int, batch: Int = 1) -> Bool {
        guard tensorCoresUsable else { return false }
        if options.checkingTensorCores { return true }
        let tiles = ceilDiv(m, TensorCoreTiles.bm) * ceilDiv(n, TensorCoreTiles.bn) * batch
        return m >= 16 && n >= 16 && k >= 16 && tiles >= 64
    }

    /// The subgroup variant where the device has subgroup arithmetic in compute shaders.
    func reductionKernel(_ base: String) -> String {
        context.info.subgroupArithmetic && !options.forceSharedMemoryReductions ? base : base + "_shared"
    }

    /// For rows short enough to give one subgroup each (no barriers): the workgroup size, a
    /// multiple of every subgroup size the device may use; nil where the workgroup kernels serve.
    func subgroupRowGroup(_ d: Int) -> Int? {
        guard context.info.subgroupArithmetic, !options.forceSharedMemoryReductions, d <= 4096 else { return nil }
        let size = context.info.subgroupSize
        guard size > 0, size & (size - 1) == 0, size <= 128 else { return nil }
        return max(128, 4 * size)
    }

    /// A power-of-two workgroup for row reductions: enough invocations for the row, at most 256.
    func rowGroupSize(_ d: Int) -> Int {
        var g = 32
        while g < 256 && g < d { g *= 2 }
        return g
    }

    func gridGroups(_ count: Int) -> Int { min(65535, max(1, ceilDiv(count, Self.elementwiseGroup))) }

    private func gather2d(_ n: Node, rows: [Int32], cols: [Int32]) throws {
        let xs = shape(n.inputs[0])
        let x = try act(n.inputs[0], role: "\(n.op.name) input"), y = try ref(n.id, role: "output of \(n.op.name)")
        let r = try hostConstant(rows.withUnsafeBytes { Array($0) }), c = try hostConstant(cols.withUnsafeBytes { Array($0) })
        let count = n.shape.count
        try dispatch(n.op.name, "gather2d", spec: [UInt32(Self.elementwiseGroup)], bindings: [x, r, c, y], writes: [y],
                     push: [count, xs[2], xs[3], n.shape[2], n.shape[3]].map { UInt32($0) }, groups: (gridGroups(count), 1, 1))
    }

    private func elementwise(_ n: Node, code: UInt32, mul: Float, add: Float) throws {
        let x = try act(n.inputs[0], role: "\(n.op.name) input"), y = try ref(n.id, role: "output of \(n.op.name)")
        let count = n.shape.count
        try dispatch(n.op.name, "elementwise", spec: [UInt32(Self.elementwiseGroup), code], bindings: [x, y], writes: [y],
                     push: [UInt32(count), mul.bitPattern, add.bitPattern], groups: (gridGroups(count), 1, 1))
    }

    private func gemm(_ op: String, a: Ref, b: Ref, wdt: UInt32, bias: Ref, c: Ref, m: Int, n: Int, k: Int,
                      sam: Int, sak: Int, sbk: Int, sbn: Int, hasBias: Bool, alpha: Float, batch: BatchPlan) throws {
        let push: [UInt32] = [m, n, k, sam, sak, sbk, sbn, hasBias ? 1 : 0].map { UInt32($0) } + [alpha.bitPattern]
            + ([batch.dims[1], batch.dims[2]] + batch.a + batch.b).map { UInt32($0) }
        if try vectorGemmIfAligned(op, a: a, b: b, wdt: wdt, bias: bias, c: c, m: m, n: n, k: k, sam: sam, sak: sak,
                                   sbk: sbk, sbn: sbn, hasBias: hasBias, alpha: alpha, batch: batch) { return }
        if usesTensorCores(m: m, n: n, k: k, batch: batch.count) {
            let t = TensorCoreTiles.self
            try dispatch(op, "matmul_coopmat", spec: t.spec(wdt: wdt), bindings: [a, b, bias, c], writes: [c], push: push,
                         groups: (ceilDiv(n, t.bn), ceilDiv(m, t.bm), batch.count))
            return
        }
        let t = GemmTiles.choose(m: m, n: n)
        try dispatch(op, "matmul", spec: t.spec(wdt: wdt), bindings: [a, b, bias, c], writes: [c], push: push,
                     groups: (ceilDiv(n, t.bn), ceilDiv(m, t.bm), batch.count))
    }

    /// A strided copy of up to six dimensions (after merging contiguous ones).
    private func copy(_ op: String, from src: Ref, to dst: Ref, dims: [Int], src ss: [Int], dst ds: [Int],
                      srcOffset: Int, dstOffset: Int) throws {
        var (d, s) = coalesce(dims: dims, strides: [ss, ds])
        guard d.count <= 6 else {
            throw LumenError.invalidArgument(op: op, detail: "a copy over \(d.count) dimensions; the kernel handles 6")
        }
        while d.count < 6 { d.insert(1, at: 0); s[0].insert(0, at: 0); s[1].insert(0, at: 0) }
        let count = dims.reduce(1, *)
        try dispatch(op, "copy", spec: [UInt32(Self.elementwiseGroup)], bindings: [src, dst], writes: [dst],
                     push: ([count, srcOffset, dstOffset] + d + s[0] + s[1]).map { UInt32($0) },
                     groups: (gridGroups(count), 1, 1))
    }
}

func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }

/// The tile of the tensor-core kernels (fixed in Shaders/coopmat_gemm.glsl: 128×128 tiles, 8
/// subgroups of 32 each computing 64×32).
enum TensorCoreTiles {
    static let bm = 128, bn = 128, workgroup = 256
    static func spec(wdt: UInt32) -> [UInt32] { [UInt32(workgroup), wdt] }
}

/// The tensor-core attention kernel's workgroup (Shaders/attention_coopmat.comp): NSG subgroups
/// of 16 queries each, keys in blocks of 64 or 32, the head size padded to a multiple of 16; the
/// most subgroups (4, 2 or 1) whose shared memory fits the device, with the larger key block
/// where it fits too.
enum TensorCoreAttention {
    static func paddedHeadSize(_ dh: Int) -> Int { (dh + 15) / 16 * 16 }
    static func sharedBytes(subgroups nsg: Int, paddedHeadSize dhp: Int, keys bkv: Int) -> Int {
        return 2 * 16 * nsg * (dhp + 8) + 2 * bkv * (dhp + 8) + 4 * nsg * 16 * (dhp + 4)
            + 4 * nsg * 16 * (bkv + 4) + 2 * nsg * 16 * (bkv + 8)
    }
    /// The most subgroups (4, 2 or 1), then the larger key block (64, else 32), that fit.
    static func shape(headSize dh: Int, sharedBytes limit: Int) -> (subgroups: Int, keys: Int)? {
        let dhp = paddedHeadSize(dh)
        for nsg in [4, 2, 1] {
            for bkv in [64, 32] where sharedBytes(subgroups: nsg, paddedHeadSize: dhp, keys: bkv) <= limit {
                return (nsg, bkv)
            }
        }
        return nil
    }
}

/// Tile shapes of the GEMM kernels (specialization constants): 64×64 tiles of 4×4 blocks, or
/// 16×64 tiles of 1×4 blocks when M is small (CLIP rows, timestep MLPs, few output channels).
struct GemmTiles {
    let bm: Int, bn: Int, bk: Int, tm: Int, tn: Int
    static func choose(m: Int, n: Int) -> GemmTiles {
        m <= 16 ? GemmTiles(bm: 16, bn: 64, bk: 16, tm: 1, tn: 4) : GemmTiles(bm: 64, bn: 64, bk: 16, tm: 4, tn: 4)
    }
    var workgroup: Int { (bm / tm) * (bn / tn) }
    func spec(wdt: UInt32) -> [UInt32] { [workgroup, bm, bn, bk, tm, tn].map { UInt32($0) } + [wdt] }
}

/// Tiles of the attention kernel: DPT head dimensions per invocation (the largest of 8, 4, 2, 1
/// dividing the head size), and the largest query and key tiles whose shared memory and
/// workgroup size fit the device.
struct AttentionTiles {
    let bq: Int, bkv: Int, dpt: Int, headSize: Int
    var workgroup: Int { bq * headSize / dpt }

    static func sharedBytes(bq: Int, bkv: Int, dh: Int) -> Int { 4 * (bq * (dh + 1) + bkv * (dh + 1) + bkv * dh + bq * bkv) }

    static func choose(headSize dh: Int, limits: VkPhysicalDeviceLimits) throws -> AttentionTiles {
        let dpt = [8, 4, 2, 1].first { dh % $0 == 0 }!
        let maxInvocations = min(Int(limits.maxComputeWorkGroupInvocations), Int(limits.maxComputeWorkGroupSize.0))
        let shared = Int(limits.maxComputeSharedMemorySize)
        for (bq, bkv) in [(32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4), (2, 2), (1, 1)] {
            if sharedBytes(bq: bq, bkv: bkv, dh: dh) <= shared && bq * dh / dpt <= maxInvocations {
                return AttentionTiles(bq: bq, bkv: bkv, dpt: dpt, headSize: dh)
            }
        }
        throw LumenError.invalidArgument(
            op: "attention", detail: "head size \(dh) does not fit the device (\(shared) bytes of shared memory, \(maxInvocations) invocations per workgroup)")
    }
}

/// The batch dimensions of a matmul, merged to at most three, with each operand's stride per
/// dimension (0 where it broadcasts).
struct BatchPlan {
    let dims: [Int]
    let a: [Int], b: [Int]
    var count: Int { dims.reduce(1, *) }
    static let single = BatchPlan(dims: [1, 1, 1], a: [0, 0, 0], b: [0, 0, 0])

    init(dims: [Int], a: [Int], b: [Int]) {
        self.dims = dims
        self.a = a
        self.b = b
    }

    init(out: Shape, a: Shape, aMatrix: Int, b: Shape, bMatrix: Int) throws {
        let sa = broadcastStrides(out: out, operand: a).map { $0 * aMatrix }
        let sb = broadcastStrides(out: out, operand: b).map { $0 * bMatrix }
        var (d, s) = coalesce(dims: out.dims, strides: [sa, sb])
        guard d.count <= 3 else {
            throw LumenError.invalidArgument(op: "matmul", detail: "batch shape \(out) needs \(d.count) dimensions after merging; the kernel handles 3")
        }
        while d.count < 3 { d.insert(1, at: 0); s[0].insert(0, at: 0); s[1].insert(0, at: 0) }
        self.init(dims: d, a: s[0], b: s[1])
    }
}

/// Element strides of `operand` broadcast to `out` (right-aligned; 0 where it broadcasts).
func broadcastStrides(out: Shape, operand: Shape) -> [Int] {
    let r = out.rank
    let padded = [Int](repeating: 1, count: r - operand.rank) + operand.dims
    let contiguous = Shape(padded).strides
    return (0..<r).map { padded[$0] == 1 && out[$0] != 1 ? 0 : contiguous[$0] }
}

/// Drops unit dimensions and merges neighbours that every stride list walks contiguously.
func coalesce(dims: [Int], strides: [[Int]]) -> ([Int], [[Int]]) {
    var d: [Int] = []
    var s = [[Int]](repeating: [], count: strides.count)
    for i in dims.indices where dims[i] != 1 {
        if let last = d.last, strides.indices.allSatisfy({ s[$0].last! == strides[$0][i] * dims[i] }) {
            d[d.count - 1] = last * dims[i]
            for j in strides.indices { s[j][s[j].count - 1] = strides[j][i] }
        } else {
            d.append(dims[i])
            for j in strides.indices { s[j].append(strides[j][i]) }
        }
    }
    if d.isEmpty { return ([1], strides.map { _ in [0] }) }
    return (d, s)
}

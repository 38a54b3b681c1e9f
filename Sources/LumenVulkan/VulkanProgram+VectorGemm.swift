import Foundation
import LumenRuntime

/// The tensor-core GEMM with 16-byte loads (Shaders/matmul_coopmat_v8.comp, gemm_v8.glsl) and
/// the convolutions it serves: 1×1 convolutions directly, every other one through an im2col
/// buffer (Shaders/im2col.comp) held in one scratch slot the program shares between them.
///
/// Why: on the H200 the implicit tensor-core kernels load one 16-bit element per instruction and
/// the convolution's gather computes its indices inside the tile loader; the 3×3 convolutions ran
/// at about 3 TFLOP/s there while the same kernel's plain GEMMs reached 18 (docs/vulkan.md).
extension VulkanProgram {
    /// The vector GEMM's module where this program may use it; nil where it may not.
    var vectorGemmKernel: String? {
        guard act16, context.bindingAlignment % 16 == 0 else { return nil }
        switch options.gemmKernel {
        case .implicit?: return nil
        case .emulated?: return "matmul_v8_emulated"
        case .vector?, nil:
            guard tensorCoresUsable, options.checkingTensorCores || context.tensorCoreVector == .passed else { return nil }
            return "matmul_coopmat_v8"
        }
    }

    /// Whether a grid of this many 128×128 tiles runs on the vector kernel (the check always does).
    func vectorGridAllowed(m: Int, n: Int, batch: Int) -> Bool {
        if options.checkingTensorCores || options.gemmKernel == .emulated { return true }
        let tiles = ceilDiv(m, TensorCoreTiles.bm) * ceilDiv(n, TensorCoreTiles.bn) * batch
        return tiles >= options.vectorGemmMinTiles
    }

    /// One dispatch of the vector GEMM: C[M, N] (row stride ldc, at c0 + z·cs) = alpha · A·B
    /// (+ bias per row or column) for each of `count` batch entries; strides in elements.
    func vectorGemm(_ op: String, kernel: String, a: Ref, b: Ref, bias: Ref, c: Ref, m: Int, n: Int, k: Int,
                    lda: Int, ldb: Int, bColumns: Bool, ldc: Int, hasBias: Bool, biasRows: Bool, alpha: Float,
                    batchDims: (Int, Int), aStrides: [Int], bStrides: [Int], cs: Int, c0: Int, count: Int) throws {
        let groups = (ceilDiv(n, TensorCoreTiles.bn), ceilDiv(m, TensorCoreTiles.bm), count)
        let common = [m, n, k, lda, ldb, ldc, hasBias ? 1 : 0].map { UInt32($0) } + [alpha.bitPattern]
            + ([batchDims.0, batchDims.1] + aStrides + bStrides + [cs, c0]).map { UInt32($0) }
        let spec = { (split: Bool) in [UInt32(TensorCoreTiles.workgroup), bColumns ? 1 : 0, biasRows ? 1 : 0, split ? 1 : 0] }
        if let plan = splitK(m: m, n: n, k: k, tiles: groups.0 * groups.1 * count),
           let part = try splitKScratch(bytes: plan.slices * count * m * n * 4) {
            try dispatch(op, kernel, spec: spec(true), bindings: [a, b, bias, dummyRef, part], writes: [part],
                         push: common + [plan.slices, plan.kSlice, count].map { UInt32($0) },
                         groups: (groups.0, groups.1, count * plan.slices))
            try dispatch(op, "splitk_reduce", spec: [UInt32(Self.elementwiseGroup), biasRows ? 1 : 0],
                         bindings: [part, bias, c], writes: [c],
                         push: [m, n, plan.slices, count, ldc, cs, c0, hasBias ? 1 : 0].map { UInt32($0) } + [alpha.bitPattern],
                         groups: (gridGroups(count * m * n), 1, 1))
            return
        }
        try dispatch(op, kernel, spec: spec(false), bindings: [a, b, bias, c, dummyRef], writes: [c],
                     push: common + [1, k, count].map { UInt32($0) }, groups: groups)
    }

    /// How to split K for a grid too small to fill the device: into slices of whole 32-wide steps,
    /// at least 8 steps each, enough for about `splitKGroups` workgroups; nil for no split.
    func splitK(m: Int, n: Int, k: Int, tiles: Int) -> (slices: Int, kSlice: Int)? {
        let target = options.splitKGroups
        guard target > 0, tiles * 2 <= target, k >= 512 else { return nil }
        let wanted = min(ceilDiv(target, tiles), k / 256)
        guard wanted >= 2 else { return nil }
        let kSlice = ceilDiv(ceilDiv(k, wanted), 32) * 32
        let slices = ceilDiv(k, kSlice)
        return slices >= 2 ? (slices, kSlice) : nil
    }

    /// The split-K partial sums' scratch (f32), a slot of its own like the im2col buffer; nil
    /// where it would exceed the binding limit (the GEMM then runs unsplit).
    func splitKScratch(bytes: Int) throws -> Ref? {
        let device = Int(context.limits.maxStorageBufferRange)
        guard bytes <= min(device, options.maxActivationBinding ?? device) else { return nil }
        return try scratch(bytes: bytes, in: &splitKScratchRef)
    }

    /// A linear layer or matmul on the vector kernel where its operands allow it; false otherwise.
    func vectorGemmIfAligned(_ op: String, a: Ref, b: Ref, wdt: UInt32, bias: Ref, c: Ref, m: Int, n: Int, k: Int,
                             sam: Int, sak: Int, sbk: Int, sbn: Int, hasBias: Bool, alpha: Float, batch: BatchPlan) throws -> Bool {
        guard let kernel = vectorGemmKernel, wdt == 1, m >= 1, n >= 8, k >= 8, k % 8 == 0,
              sak == 1, sam % 8 == 0, (batch.a + batch.b).allSatisfy({ $0 % 8 == 0 }),
              vectorGridAllowed(m: m, n: n, batch: batch.count) else { return false }
        let bColumns: Bool, ldb: Int
        if sbk == 1, sbn % 8 == 0 { bColumns = true; ldb = sbn }
        else if sbn == 1, sbk % 8 == 0 { bColumns = false; ldb = sbk }
        else { return false }
        try vectorGemm(op, kernel: kernel, a: a, b: b, bias: bias, c: c, m: m, n: n, k: k, lda: sam, ldb: ldb,
                       bColumns: bColumns, ldc: n, hasBias: hasBias, biasRows: false, alpha: alpha,
                       batchDims: (batch.dims[1], batch.dims[2]), aStrides: batch.a, bStrides: batch.b,
                       cs: m * n, c0: 0, count: batch.count)
        return true
    }

    /// A convolution on the vector kernel (f16 weights, C·KH·KW a multiple of 8); false otherwise.
    /// 1×1 convolutions with stride 1 and no padding read x as B directly; the others gather it
    /// into the im2col scratch first, all images at once where that fits `im2colChunkBytes`,
    /// else image by image in chunks of output columns.
    func vectorConvIfAligned(_ op: String, x: Ref, xs: Shape, w: Ref, wdt: UInt32, ws: Shape, bias: Ref, hasBias: Bool,
                             y: Ref, outShape: Shape, p: Conv2DParameters, table: Ref) throws -> Bool {
        let batch = xs[0], cin = xs[1], h = xs[2], wd = xs[3], o = ws[0], kh = ws[2], kw = ws[3]
        let oh = outShape[2], ow = outShape[3], spatial = oh * ow, k = cin * kh * kw
        guard let kernel = vectorGemmKernel, wdt == 1, k % 8 == 0, spatial >= 8,
              vectorGridAllowed(m: o, n: spatial, batch: batch) else { return false }
        if kh == 1, kw == 1, p.strideH == 1, p.strideW == 1, p.padH == 0, p.padW == 0 {
            guard spatial % 8 == 0 else { return false }
            try vectorGemm(op, kernel: kernel, a: w, b: x, bias: bias, c: y, m: o, n: spatial, k: k, lda: k, ldb: spatial,
                           bColumns: false, ldc: spatial, hasBias: hasBias, biasRows: true, alpha: 1,
                           batchDims: (1, 1), aStrides: [0, 0, 0], bStrides: [cin * spatial, 0, 0],
                           cs: o * spatial, c0: 0, count: batch)
            return true
        }
        let device = Int(context.limits.maxStorageBufferRange)
        let limit = min(options.im2colChunkBytes ?? (64 << 20), device, options.maxActivationBinding ?? device)
        let ld = (spatial + 7) / 8 * 8, perImage = k * ld * 2
        func gather(n0: Int, nc: Int, ldcol: Int, img0: Int, images: Int, into col: Ref) throws {
            let push = [cin, h, wd, ow, p.strideH, p.strideW, p.padH, p.padW, n0, nc, ldcol, k, img0].map { UInt32($0) }
            try dispatch(op, "im2col", spec: [UInt32(Self.elementwiseGroup)], bindings: [x, table, col], writes: [col],
                         push: push, groups: (ceilDiv(nc, Self.elementwiseGroup), k, images))
        }
        if batch * perImage <= limit {
            let col = try im2colScratch(bytes: batch * perImage)
            try gather(n0: 0, nc: spatial, ldcol: ld, img0: 0, images: batch, into: col)
            try vectorGemm(op, kernel: kernel, a: w, b: col, bias: bias, c: y, m: o, n: spatial, k: k, lda: k, ldb: ld,
                           bColumns: false, ldc: spatial, hasBias: hasBias, biasRows: true, alpha: 1,
                           batchDims: (1, 1), aStrides: [0, 0, 0], bStrides: [k * ld, 0, 0],
                           cs: o * spatial, c0: 0, count: batch)
            return true
        }
        // Columns per chunk: whole 128-wide tiles that fit the limit (at least one tile).
        let chunk = perImage <= limit ? spatial : max(TensorCoreTiles.bn, limit / (k * 2) / TensorCoreTiles.bn * TensorCoreTiles.bn)
        let col = try im2colScratch(bytes: k * ((min(chunk, spatial) + 7) / 8 * 8) * 2)
        for img in 0..<batch {
            var n0 = 0
            while n0 < spatial {
                let nc = min(chunk, spatial - n0), ldcol = (nc + 7) / 8 * 8
                try gather(n0: n0, nc: nc, ldcol: ldcol, img0: img, images: 1, into: col)
                try vectorGemm(op, kernel: kernel, a: w, b: col, bias: bias, c: y, m: o, n: nc, k: k, lda: k, ldb: ldcol,
                               bColumns: false, ldc: spatial, hasBias: hasBias, biasRows: true, alpha: 1,
                               batchDims: (1, 1), aStrides: [0, 0, 0], bStrides: [0, 0, 0],
                               cs: 0, c0: img * o * spatial + n0, count: 1)
                n0 += nc
            }
        }
        return true
    }

    /// The im2col scratch (see `scratch(bytes:in:)`).
    func im2colScratch(bytes: Int) throws -> Ref { try scratch(bytes: bytes, in: &im2colScratchRef) }

    /// A scratch buffer shared by the dispatches that use it: one activation slot of its own (so
    /// that the recorder orders the writers and readers that share it), replaced by a new, larger
    /// slot when a later dispatch needs more.
    func scratch(bytes: Int, in current: inout Ref?) throws -> Ref {
        if let s = current, s.range.size >= bytes { return s }
        let range = try activationArena.allocate(bytes)
        slotRanges.append(range)
        let ref = Ref(range: range, slot: slotRanges.count - 1)
        current = ref
        return ref
    }
}

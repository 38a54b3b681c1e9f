import Foundation
import LumenRuntime

/// The tensor-core kernels check themselves on each device before any program uses them: a small
/// random problem of every shape they serve (a batched matmul with transposed operands, a linear
/// layer with bias, 3×3 and strided convolutions, attention at SD's head sizes, sizes that leave
/// partial tiles) runs through
/// them and through the scalar kernels, both with f16 activations. They differ only in the order
/// of f32 accumulation, so they must agree to f16's rounding; if they do not (a driver that
/// miscompiles them, say) they are switched off for the process with one line on stderr.
extension VulkanExecutor {
    /// Largest difference accepted, relative to the largest value of the scalar kernels' output.
    /// Both sides store f16 outputs (relative rounding 4.9e-4 each); a fragment-layout error is
    /// of the order of the output itself.
    static let tensorCoreCheckTolerance: Float = 4e-3

    /// "on", "off: why" or "not checked yet": what `lumen devices` and the benchmarks print.
    public var tensorCoreStatus: String {
        guard context.cooperativeMatrix else {
            return "off (the device lacks VK_NV_cooperative_matrix 16x16x16 f16 with f32 accumulation, or it is turned off)"
        }
        if options.tensorCores == .off { return "off (LUMEN_VULKAN_COOPMAT=0)" }
        switch context.tensorCoreCheck {
        case .unchecked: return "available, checked on first use with f16 activations"
        case .passed:
            var off: [String] = []
            if case .failed(let why) = context.tensorCoreAttention { off.append("attention off (\(why))") }
            if case .failed(let why) = context.tensorCoreVector { off.append("16-byte-load GEMM off (\(why))") }
            if !off.isEmpty {
                return "on for matmul and conv2d (checked against the scalar kernels on this device); " + off.joined(separator: "; ")
            }
            return "on for matmul, conv2d and attention, with the 16-byte-load GEMM and im2col convolutions (checked against the scalar kernels on this device)"
        case .failed(let why): return "off (\(why))"
        }
    }

    /// Runs the check now where it has not run (and the device has the kernels); the status.
    public func checkTensorCoresNow() -> String {
        checkTensorCoresOnce()
        return tensorCoreStatus
    }

    /// Runs the check once per device (process-wide), before the first program that could use
    /// the kernels is compiled.
    func checkTensorCoresOnce() {
        guard context.cooperativeMatrix, options.tensorCores == .auto, !options.checkingTensorCores else { return }
        context.tensorCoreCheckRun.lock()
        defer { context.tensorCoreCheckRun.unlock() }
        guard context.tensorCoreCheck == .unchecked else { return }
        var result: (gemm: VulkanContext.TensorCoreCheck, attention: VulkanContext.TensorCoreCheck,
                     vector: VulkanContext.TensorCoreCheck)
        do {
            result = try runTensorCoreCheck()
        } catch {
            result = (.failed("their check failed to run: \(error)"), .failed("their check failed to run"),
                      .failed("their check failed to run"))
        }
        context.tensorCoreAttention = result.attention
        context.tensorCoreVector = result.vector
        context.tensorCoreCheck = result.gemm
        if case .failed(let why) = result.gemm {
            FileHandle.standardError.write(Data("vulkan: tensor-core kernels switched off on \(device.name): \(why)\n".utf8))
        } else {
            if case .failed(let why) = result.attention {
                FileHandle.standardError.write(Data("vulkan: tensor-core attention switched off on \(device.name): \(why)\n".utf8))
            }
            if case .failed(let why) = result.vector {
                FileHandle.standardError.write(Data("vulkan: the 16-byte-load tensor-core GEMM switched off on \(device.name): \(why)\n".utf8))
            }
        }
    }

    private func runTensorCoreCheck() throws -> (gemm: VulkanContext.TensorCoreCheck, attention: VulkanContext.TensorCoreCheck,
                                                 vector: VulkanContext.TensorCoreCheck) {
        var rng = SplitMix(seed: 0x5eed_c0de)
        func random(_ shape: Shape) throws -> Tensor {
            try Tensor(shape: shape, values: (0..<shape.count).map { _ in rng.nextSigned() })
        }
        let g = Graph()
        // Batched matmul, A transposed and B transposed, M/N/K not multiples of 16 or 128.
        let a = try g.input("a", shape: [2, 3, 40, 37])
        let b = try g.input("b", shape: [2, 1, 130, 40])
        let mm = try g.matmul(a, b, transposeA: true, transposeB: true, alpha: 0.5)
        // A linear layer with bias (B = the [N, K] weight, K contiguous) over 150 rows.
        let x = try g.input("x", shape: [150, 72])
        let w = try g.constant(try random([136, 72]))
        let bias = try g.constant(try random([136]))
        let lin = try g.linear(x, weight: w, bias: bias)
        // Convolutions: 3×3 padded, and 3×3 stride 2.
        let img = try g.input("img", shape: [2, 20, 13, 17])
        let cw = try g.constant(try random([33, 20, 3, 3]))
        let cb = try g.constant(try random([33]))
        let conv = try g.conv2d(img, weight: cw, bias: cb, stride: 1, padding: 1)
        let conv2 = try g.conv2d(img, weight: cw, bias: nil, stride: 2, padding: 1)
        // Attention at SD's head sizes (40, 80, 160 pad to 48, 80, 160) with partial query and key
        // blocks: [2, 70, heads·dh] queries against 45 keys.
        var attention: [Value] = [], attentionInputs: [String: Tensor] = [:]
        for (heads, dh) in [(3, 40), (2, 80), (1, 160)] {
            let width = heads * dh
            let qv = try g.input("q\(dh)", shape: [2, 70, width]), kv = try g.input("k\(dh)", shape: [2, 45, width])
            let vv = try g.input("v\(dh)", shape: [2, 45, width])
            attention.append(try g.attention(query: qv, key: kv, value: vv, heads: heads))
            attentionInputs["q\(dh)"] = try random([2, 70, width])
            attentionInputs["k\(dh)"] = try random([2, 45, width])
            attentionInputs["v\(dh)"] = try random([2, 45, width])
        }
        // The 16-byte-load GEMM (f16 weights, K a multiple of 8): a linear layer (B as N rows of
        // K), a batched matmul (B as K rows of N), 3×3 convolutions through im2col (all images at
        // once, image by image, and in column chunks: the check's im2col limit is small), a 1×1.
        let w16 = try g.constant(try random([136, 72]).converted(to: .f16))
        let lin16 = try g.linear(x, weight: w16, bias: bias)
        let a2 = try g.input("a2", shape: [2, 40, 48]), b2 = try g.input("b2", shape: [2, 48, 72])
        let mm16 = try g.matmul(a2, b2, transposeA: false, transposeB: false, alpha: 0.75)
        let img16 = try g.input("img16", shape: [2, 16, 13, 17])
        let cw16 = try g.constant(try random([33, 16, 3, 3]).converted(to: .f16))
        let conv16 = try g.conv2d(img16, weight: cw16, bias: cb, stride: 1, padding: 1)
        let conv16s2 = try g.conv2d(img16, weight: cw16, bias: nil, stride: 2, padding: 1)
        let imgBig = try g.input("imgBig", shape: [1, 16, 40, 40])
        let convChunks = try g.conv2d(imgBig, weight: cw16, bias: cb, stride: 1, padding: 1)
        let img1 = try g.input("img1", shape: [2, 16, 16, 14])
        let pw16 = try g.constant(try random([40, 16, 1, 1]).converted(to: .f16))
        let pb = try g.constant(try random([40]))
        let conv1x1 = try g.conv2d(img1, weight: pw16, bias: pb, stride: 1, padding: 0)
        // Split K: a linear layer with K = 1000 (3 slices), a 3×3 convolution from 64 channels (2).
        let deep = try g.input("deep", shape: [40, 1000])
        let linSplit = try g.linear(deep, weight: try g.constant(try random([136, 1000]).converted(to: .f16)), bias: bias)
        let wide = try g.input("wide", shape: [2, 64, 8, 8])
        let convSplit = try g.conv2d(wide, weight: try g.constant(try random([33, 64, 3, 3]).converted(to: .f16)),
                                     bias: cb, stride: 1, padding: 1)
        let vector = [lin16, mm16, conv16, conv16s2, convChunks, conv1x1, linSplit, convSplit]
        let outputs = [mm, lin, conv, conv2] + attention + vector
        let names = ["matmul", "linear", "conv2d 3x3", "conv2d 3x3 stride 2", "attention dh 40", "attention dh 80", "attention dh 160",
                     "linear (16-byte loads)", "matmul (16-byte loads)", "conv2d 3x3 (im2col)", "conv2d 3x3 stride 2 (im2col)",
                     "conv2d 3x3 (im2col in column chunks)", "conv2d 1x1 (16-byte loads)", "linear (split K)", "conv2d 3x3 (split K)"]
        var inputs = ["a": try random([2, 3, 40, 37]), "b": try random([2, 1, 130, 40]),
                      "x": try random([150, 72]), "img": try random([2, 20, 13, 17]),
                      "a2": try random([2, 40, 48]), "b2": try random([2, 48, 72]), "img16": try random([2, 16, 13, 17]),
                      "imgBig": try random([1, 16, 40, 40]), "img1": try random([2, 16, 16, 14]),
                      "deep": try random([40, 1000]), "wide": try random([2, 64, 8, 8])]
        inputs.merge(attentionInputs) { a, _ in a }

        var checking = options
        checking.checkingTensorCores = true
        checking.profile = false
        checking.gemmKernel = options.gemmKernel == .implicit ? .implicit : .vector
        checking.im2colChunkBytes = 100_000
        checking.splitKGroups = 128
        var scalar = options
        scalar.tensorCores = .off
        scalar.gemmKernel = .implicit
        scalar.profile = false
        let fast = try VulkanProgram(context: context, graph: g, outputs: outputs, options: checking, f16Activations: true)
        let used = fast.dispatchedKernels
        let vectorExpected = checking.gemmKernel != .implicit
        // The first four outputs use the implicit kernels (f32 weights or unaligned shapes); with
        // LUMEN_VULKAN_GEMM=implicit the vector cases do too.
        guard used.filter({ $0 == "matmul_coopmat_f16" || $0 == "conv2d_coopmat_f16" }).count >= 4,
              used.filter({ $0 == "attention_coopmat_f16" }).count == 3,
              !vectorExpected || (used.contains("matmul_coopmat_v8_f16") && used.contains("im2col_f16")
                                  && used.filter({ $0 == "splitk_reduce_f16" }).count >= 2)
        else {
            let why = VulkanContext.TensorCoreCheck.failed("the check did not reach the tensor-core kernels (\(used))")
            return (why, why, why)
        }
        let reference = try VulkanProgram(context: context, graph: g, outputs: outputs, options: scalar, f16Activations: true)
        let got = try fast.run(inputs).tensors, want = try reference.run(inputs).tensors
        var verdict: [VulkanContext.TensorCoreCheck] = [.passed, .passed,
                                                        vectorExpected ? .passed : .failed("LUMEN_VULKAN_GEMM=implicit")]
        for (i, name) in names.enumerated() {
            let p = got[i].toFloats(), q = want[i].toFloats()
            let scale = max(q.map { abs($0) }.max() ?? 0, 1e-6)
            var worst: Float = 0
            for j in p.indices {
                let d = abs(p[j] - q[j])
                if !(d <= worst) { worst = d.isNaN ? .infinity : d }
            }
            let group = i < 4 ? 0 : i < 7 ? 1 : 2
            if !(worst <= Self.tensorCoreCheckTolerance * scale), verdict[group] == .passed {
                verdict[group] = .failed("\(name) differs from the scalar kernel by \(worst) (output scale \(scale))")
            }
        }
        return (verdict[0], verdict[1], verdict[2])
    }
}

/// A small deterministic generator for the check's inputs (SplitMix64).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func nextSigned() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}

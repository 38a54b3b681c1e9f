import Foundation
import LumenCPU
import LumenRuntime
import LumenVulkan
import XCTest

/// The tensor-core kernels (Shaders/*_coopmat.comp) and how the executor chooses them. On a
/// device without VK_NV_cooperative_matrix (lavapipe) they must stay off and change nothing; on
/// one with it (an NVIDIA GPU) their self-check must pass and an f16-activation program must use
/// them and agree with the CPU executor.
final class TensorCoreTests: VulkanTestCase {
    private func deviceOffersThem() throws -> Bool {
        let details = try VulkanExecutor.deviceDetails().first { $0.info.index == vulkan.device.index }
        return details?.has("VK_NV_cooperative_matrix") == true && vulkan.device.subgroupSize == 32
            && ProcessInfo.processInfo.environment["LUMEN_VULKAN_COOPMAT"] != "0"
    }

    func testDefaultActivationsFollowTheDevice() throws {
        guard ProcessInfo.processInfo.environment["LUMEN_VULKAN_ACTIVATIONS"] == nil else {
            throw XCTSkip("LUMEN_VULKAN_ACTIVATIONS is set")
        }
        // auto (f16 with the f32 fallback) where the device has the tensor-core kernels, f32
        // elsewhere; an explicit choice is kept, also one assigned after the options were made.
        let expected: VulkanExecutor.ActivationPrecision = try deviceOffersThem() ? .auto : .f32
        XCTAssertEqual(try VulkanExecutor(options: .init(profile: false)).options.activations, expected)
        XCTAssertEqual(try VulkanExecutor(options: .init(profile: false, activations: .auto)).options.activations, .auto)
        XCTAssertEqual(try VulkanExecutor(options: .init(profile: false, activations: .f32)).options.activations, .f32)
        var assigned = VulkanExecutor.Options(profile: false)
        assigned.activations = .f32
        XCTAssertEqual(try VulkanExecutor(options: assigned).options.activations, .f32)
    }

    func testConvAndLinearUseTensorCoresOnlyWhereCheckedAndAgree() throws {
        guard let e16 = vulkanExecutorF16() else { throw XCTSkip("the device has no 16-bit storage buffers") }
        let status = e16.checkTensorCoresNow()
        let g = Graph()
        // Grids of at least 64 tiles of 128×128 (the executor's rule): 1·32·2 for the convolution,
        // 64·2 for the linear layer.
        let x = try g.input("x", shape: [2, 32, 64, 64])
        let w = try random([96, 32, 3, 3], dtype: .f16, seed: 21, scale: 0.1)
        let conv = try g.conv2d(x, weight: try g.constant(w), bias: try g.constant(try random([96], seed: 22)), stride: 1, padding: 1)
        let tokens = try g.reshape(try g.permute(conv, [0, 2, 3, 1]), [8192, 96])
        let lin = try g.linear(tokens, weight: try g.constant(try random([160, 96], dtype: .f16, seed: 23, scale: 0.1)))
        // Attention at SD 1.5's first-level shape, reduced: 256 queries, 77 and 256 keys, head size 40.
        let qa = try g.input("q", shape: [2, 256, 320]), ka = try g.input("k", shape: [2, 256, 320])
        let self_ = try g.attention(query: qa, key: ka, value: ka, heads: 8)
        let ca = try g.input("c", shape: [2, 77, 320])
        let cross = try g.attention(query: qa, key: ca, value: ca, heads: 8)
        let program = try e16.compile(g, outputs: [conv, lin, self_, cross])
        let kernels = try XCTUnwrap(program as? VulkanProgram).dispatchedKernels
        if try deviceOffersThem() {
            XCTAssertTrue(status.hasPrefix("on"), "tensor-core check on \(e16.device.name): \(status)")
            XCTAssertTrue(kernels.contains("conv2d_coopmat_f16") && kernels.contains("matmul_coopmat_f16")
                          && kernels.contains("attention_coopmat_f16"), "\(kernels)")
        } else {
            XCTAssertTrue(status.hasPrefix("off"), status)
            XCTAssertFalse(kernels.contains { $0.contains("coopmat") }, "\(kernels)")
        }
        let inputs = ["x": try random([2, 32, 64, 64], seed: 24), "q": try random([2, 256, 320], seed: 25),
                      "k": try random([2, 256, 320], seed: 26), "c": try random([2, 77, 320], seed: 27)]
        let cpu = try CPUExecutor(threads: 2).compile(g, outputs: [conv, lin, self_, cross]).run(inputs)
        let gpu = try program.run(inputs)
        assertClose(gpu[self_]!.toFloats(), cpu[self_]!.toFloats(), atol: TOL16.atol, rtol: TOL16.rtol, "self-attention 256x256 dh 40 f16")
        assertClose(gpu[cross]!.toFloats(), cpu[cross]!.toFloats(), atol: TOL16.atol, rtol: TOL16.rtol, "cross-attention 256x77 dh 40 f16")
        // Unit-scale inputs, K = 288 and 96: the outputs reach about ±3; TOL16 is the f16-activation bound.
        assertClose(gpu[conv]!.toFloats(), cpu[conv]!.toFloats(), atol: TOL16.atol, rtol: TOL16.rtol, "conv2d 32->96 @64x64 f16")
        assertClose(gpu[lin]!.toFloats(), cpu[lin]!.toFloats(), atol: TOL16.atol, rtol: TOL16.rtol, "linear 8192x96x160 f16")
    }
}

/// The 16-byte-load GEMM's loads, shared-memory layout, bounds, batch strides, epilogue and the
/// im2col convolutions (Shaders/gemm_v8.glsl, im2col.comp), run on any device with f16
/// activations through `matmul_v8_emulated` (the same tile with the fragments done by scalar
/// code), against the CPU executor. Only the tensor-core instructions themselves are left to the
/// device's self-check (`VulkanExecutor+TensorCores.swift`), which runs these shapes too.
final class VectorGemmTests: VulkanTestCase {
    func testEmulatedVectorGemmAndIm2colAgreeWithTheCPU() throws {
        guard vulkan.device.storageBuffer16BitAccess else { throw XCTSkip("the device has no 16-bit storage buffers") }
        var options = VulkanExecutor.Options(profile: false, poisonActivations: true, activations: .f16)
        options.gemmKernel = .emulated
        // Small enough that the 13×17 convolution goes image by image and the 40×40 one in
        // chunks of 256 columns (7, the last of 64).
        options.im2colChunkBytes = 100_000
        options.splitKGroups = 128
        let e = try VulkanExecutor(validation: true, options: options)
        let g = Graph()
        let x = try g.input("x", shape: [150, 72])
        let lin = try g.linear(x, weight: try g.constant(try random([136, 72], dtype: .f16, seed: 31, scale: 0.2)),
                               bias: try g.constant(try random([136], seed: 32)))
        let a = try g.input("a", shape: [2, 3, 40, 48]), b = try g.input("b", shape: [2, 1, 48, 72])
        let mm = try g.matmul(a, b, transposeA: false, transposeB: false, alpha: 0.75)
        let bt = try g.input("bt", shape: [2, 3, 24, 48])
        let mmT = try g.matmul(a, bt, transposeA: false, transposeB: true, alpha: 1)
        let cw = try g.constant(try random([33, 16, 3, 3], dtype: .f16, seed: 33, scale: 0.2))
        let cb = try g.constant(try random([33], seed: 34))
        let img = try g.input("img", shape: [2, 16, 13, 17])
        let conv = try g.conv2d(img, weight: cw, bias: cb, stride: 1, padding: 1)
        let convS2 = try g.conv2d(img, weight: cw, bias: nil, stride: 2, padding: 1)
        let big = try g.input("big", shape: [1, 16, 40, 40])
        let convChunks = try g.conv2d(big, weight: cw, bias: cb, stride: 1, padding: 1)
        let pix = try g.input("pix", shape: [2, 16, 16, 14])
        let conv1 = try g.conv2d(pix, weight: try g.constant(try random([40, 16, 1, 1], dtype: .f16, seed: 35, scale: 0.3)),
                                 bias: try g.constant(try random([40], seed: 36)), stride: 1, padding: 0)
        // C·KH·KW = 27 is not a multiple of 8: the scalar kernel serves it.
        let rgb = try g.input("rgb", shape: [1, 3, 12, 12])
        let convRGB = try g.conv2d(rgb, weight: try g.constant(try random([8, 3, 3, 3], dtype: .f16, seed: 37, scale: 0.3)),
                                   bias: nil, stride: 1, padding: 1)
        // Split K (grids of 1–2 tiles, K ≥ 512): a linear layer with K = 1000 in 3 slices (the last
        // one ends inside a 32-wide step), a 3×3 convolution from 64 channels (K = 576) in 2.
        let deep = try g.input("deep", shape: [40, 1000])
        let linSplit = try g.linear(deep, weight: try g.constant(try random([136, 1000], dtype: .f16, seed: 38, scale: 0.05)),
                                    bias: try g.constant(try random([136], seed: 39)))
        let wide = try g.input("wide", shape: [2, 64, 8, 8])
        let convSplit = try g.conv2d(wide, weight: try g.constant(try random([48, 64, 3, 3], dtype: .f16, seed: 48, scale: 0.05)),
                                     bias: try g.constant(try random([48], seed: 49)), stride: 1, padding: 1)
        let outputs = [lin, mm, mmT, conv, convS2, convChunks, conv1, convRGB, linSplit, convSplit]
        let names = ["linear", "matmul", "matmul B transposed", "conv 3x3 image by image", "conv 3x3 stride 2",
                     "conv 3x3 in column chunks", "conv 1x1", "conv 3x3 from 3 channels", "linear split K", "conv 3x3 split K"]
        let inputs = ["x": try random([150, 72], seed: 40), "a": try random([2, 3, 40, 48], seed: 41),
                      "b": try random([2, 1, 48, 72], seed: 42), "bt": try random([2, 3, 24, 48], seed: 43),
                      "img": try random([2, 16, 13, 17], seed: 44), "big": try random([1, 16, 40, 40], seed: 45),
                      "pix": try random([2, 16, 16, 14], seed: 46), "rgb": try random([1, 3, 12, 12], seed: 47),
                      "deep": try random([40, 1000], seed: 50), "wide": try random([2, 64, 8, 8], seed: 51)]
        let program = try e.compile(g, outputs: outputs)
        let kernels = try XCTUnwrap(program as? VulkanProgram).dispatchedKernels
        // The split convolution (2 × 73.7 KB of im2col) also goes image by image.
        XCTAssertEqual(kernels.filter { $0 == "matmul_v8_emulated_f16" }.count, 1 + 1 + 1 + 2 + 1 + 7 + 1 + 1 + 2, "\(kernels)")
        XCTAssertEqual(kernels.filter { $0 == "im2col_f16" }.count, 2 + 1 + 7 + 2, "\(kernels)")
        XCTAssertEqual(kernels.filter { $0 == "splitk_reduce_f16" }.count, 1 + 2, "\(kernels)")
        XCTAssertTrue(kernels.contains("conv2d_f16"), "the 3-channel convolution should stay on the scalar kernel: \(kernels)")
        let gpu = try program.run(inputs)
        let cpu = try CPUExecutor(threads: 2).compile(g, outputs: outputs).run(inputs)
        for (v, name) in zip(outputs, names) {
            assertClose(gpu[v]!.toFloats(), cpu[v]!.toFloats(), atol: TOL16.atol, rtol: TOL16.rtol, "\(name) (16-byte loads, emulated)")
        }
        let messages = e.validationMessages
        XCTAssertTrue(messages.isEmpty, "validation messages:\n" + messages.map(\.description).joined(separator: "\n"))
    }
}

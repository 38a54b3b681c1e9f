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

    func testDefaultActivationsAreF32() throws {
        guard ProcessInfo.processInfo.environment["LUMEN_VULKAN_ACTIVATIONS"] == nil else {
            throw XCTSkip("LUMEN_VULKAN_ACTIVATIONS is set")
        }
        // f32 on every device (measured faster than f16 with the tensor cores on the H200 so far);
        // an explicit choice is kept.
        XCTAssertEqual(try VulkanExecutor(options: .init(profile: false)).options.activations, .f32)
        XCTAssertEqual(try VulkanExecutor(options: .init(profile: false, activations: .auto)).options.activations, .auto)
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

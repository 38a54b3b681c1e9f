import Foundation
import Lumen
import LumenRuntime

/// `lumen-bench model --model controlnet`: Stable Diffusion 1.5 guided by an SD 1.5 ControlNet
/// (the UNet's encoder half and mid block, as lllyasviel's sd-controlnet-* and diffusers'
/// `ControlNetModel.from_unet` build it: conditioning embedding 16, 32, 96, 256), random f16
/// weights, written once beside the SD 1.5 random-weight folder (its `controlnet/`, 0.7 GB). Timed:
/// `controlnet-N` (the ControlNet alone, batch 2 = guidance), `controlnet-step-N` (the ControlNet
/// and the UNet that adds its residuals, one denoising step with guidance, as diffusers'
/// `StableDiffusionControlNetPipeline` runs it), and `generate-N`: a whole `lumen generate
/// --control` with its peak RSS.
extension SD15ModelBenchmark {
    /// Writes the random-weight SD 1.5 folder (if it is not there) and its ControlNet; returns the
    /// model folder and the ControlNet folder.
    func prepareControlNetModel(log: (String) -> Void) throws -> (model: String, controlNet: String) {
        let model = try prepareModel(log: log)
        let folder = model + "/controlnet"
        let fm = FileManager.default
        if fm.fileExists(atPath: folder + "/.complete") { return (model, folder) }
        log("writing a random-weight SD 1.5 ControlNet to \(folder) (once)")
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // The UNet's config and the conditioning embedding, as ControlNetModel.from_unet writes them.
        let unetConfig = try StableDiffusionModel.load(path: model).unetConfig
        guard var config = try JSONSerialization.jsonObject(with: JSONEncoder().encode(unetConfig)) as? [String: Any] else {
            throw LumenError.invalidArgument(op: "controlnet config", detail: "the UNet config did not encode as a JSON object")
        }
        config["_class_name"] = "ControlNetModel"
        config["conditioning_channels"] = 3
        config["conditioning_embedding_out_channels"] = [16, 32, 96, 256]
        config["controlnet_conditioning_channel_order"] = "rgb"
        config["global_pool_conditions"] = false
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted]),
                             to: folder + "/config.json")
        let controlConfig = try ControlNetConfig(path: folder + "/config.json")
        let weights = RecordingWeights(RandomWeights(seed: 5))
        let g = Graph()
        _ = try ControlNetModel(config: controlConfig).build(
            g, sample: try g.input("s", shape: [1, 4, 8, 8]), timestep: try g.input("t", shape: [1]),
            context: try g.input("c", shape: [1, 77, unetConfig.crossAttentionDim]), condition: try g.input("i", shape: [1, 3, 64, 64]),
            weights: weights)
        try weights.write(to: folder + "/diffusion_pytorch_model.safetensors")
        _ = fm.createFile(atPath: folder + "/.complete", contents: nil)
        return (model, folder)
    }

    /// The ControlNet phases at each of `imageSizes`: `controlnet-N` and `controlnet-step-N`.
    func runControlNetPhases(model folder: String, controlNet: String, log: @escaping (String) -> Void) throws -> [Result] {
        let model = try StableDiffusionModel.load(path: folder)
        let net = try ControlNet(path: controlNet)
        let runner = PhaseRunner(log: log, onResult: onResult)
        for image in imageSizes where phases.contains("unet") {
            let size = image / 8
            // One graph per phase: the inputs, then the ControlNet's residuals (scale 1, as
            // diffusers' conditioning_scale multiplies them inside the ControlNet).
            func build(_ g: Graph) throws -> (residuals: (down: [Value], mid: Value), sample: Value, timestep: Value, context: Value) {
                let x = try g.input("sample", shape: [2, model.unetConfig.inChannels, size, size])
                let t = try g.input("timestep", shape: [2])
                let c = try g.input("context", shape: [2, 77, model.unetConfig.crossAttentionDim])
                let cond = try g.input("condition", shape: [2, net.config.conditioningChannels, image, image])
                let r = try ControlNetModel(config: net.config).build(g, sample: x, timestep: t, context: c, condition: cond, weights: net.weights,
                                                                     maxTensorBytes: executor.maxTensorBytes)
                return (r, x, t, c)
            }
            func inputs() throws -> [String: Tensor] {
                // An edge-map-like conditioning image: mostly 0 with sparse 1s, as canny edges are.
                let n = 2 * net.config.conditioningChannels * image * image
                let edges = (0..<n).map { i -> Float in (i * 2_654_435_761) % 97 < 9 ? 1 : 0 }
                return ["sample": try runner.random([2, model.unetConfig.inChannels, size, size]), "timestep": try Tensor([981, 981]),
                        "context": try runner.random([2, 77, model.unetConfig.crossAttentionDim]),
                        "condition": try Tensor(shape: [2, net.config.conditioningChannels, image, image], values: edges)]
            }
            runner.attempt("controlnet-\(image)") {
                let g = Graph()
                let b = try build(g)
                // One output that needs every residual: each flattened per batch row, concatenated.
                let sums = try (b.residuals.down + [b.residuals.mid]).map { try g.reshape($0, [2, $0.shape.count / 2]) }
                let out = try g.concat(sums, axis: 1)
                return try time("controlnet-\(image)", graph: g, output: out, inputs: inputs())
            }
            runner.attempt("controlnet-step-\(image)") {
                let g = Graph()
                let b = try build(g)
                let y = try UNet2DConditionModel(config: model.unetConfig).build(
                    g, sample: b.sample, timestep: b.timestep, context: b.context, weights: model.unetWeights,
                    maxTensorBytes: executor.maxTensorBytes, residuals: b.residuals)
                return try time("controlnet-step-\(image)", graph: g, output: y, inputs: inputs())
            }
        }
        return try runner.finish()
    }

    /// A conditioning image for the whole generation (written beside the ControlNet): a grid of
    /// white lines on black, an edge map's kind of picture.
    func controlImage(in folder: String, size: Int) throws -> String {
        let path = folder + "/control-\(size).png"
        if FileManager.default.fileExists(atPath: path) { return path }
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        for y in 0..<size {
            for x in 0..<size where x % 37 == 0 || y % 29 == 0 || (x + y) % 53 == 0 {
                pixels[3 * (y * size + x)] = 255
                pixels[3 * (y * size + x) + 1] = 255
                pixels[3 * (y * size + x) + 2] = 255
            }
        }
        try RGBImage(width: size, height: size, pixels: pixels).writePNG(to: path)
        return path
    }
}

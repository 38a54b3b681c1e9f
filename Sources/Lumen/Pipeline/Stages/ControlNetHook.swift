import LumenRuntime

/// ControlNets on the denoising loop: at each step every active ControlNet runs on the step's
/// model input, the context and its conditioning image, and the sum of their scaled residuals
/// goes into the UNet (`down_residual_k`, `mid_residual`), as diffusers'
/// `StableDiffusionControlNetPipeline` and `MultiControlNetModel` compute them. A `DenoisingHook`:
/// the loop is unchanged.
struct ControlNetHook: DenoisingHook {
    struct Net {
        let network: CompiledNetwork
        /// The conditioning image repeated for every row of the batch [batch, 3, H, W].
        let image: Tensor
        let input: ControlNetInput
    }
    let nets: [Net]
    let conditioning: Conditioning
    /// The shapes of the residuals (zeros when no ControlNet acts at a step).
    let shapes: (down: [Shape], mid: Shape)
    /// The loop's steps, for the guidance window: diffusers' `controlnet_keep` over them.
    let steps: Range<Int>

    func unetInputs(step: Int, timestep: Float, modelInput: Tensor) throws -> [String: Tensor] {
        var down = shapes.down.map { [Float](repeating: 0, count: $0.count) }
        var mid = [Float](repeating: 0, count: shapes.mid.count)
        let i = Double(step - steps.lowerBound), n = Double(steps.count)
        let batch = modelInput.shape[0]
        for net in nets {
            // diffusers: keep = 1 − (i / n < start or (i + 1) / n > end).
            let keep: Float = (i / n < net.input.start || (i + 1) / n > net.input.end) ? 0 : 1
            let scale = net.input.scale * keep
            if scale == 0 { continue }
            var inputs = conditioning.addedInputs
            inputs["sample"] = modelInput
            inputs["timestep"] = try Tensor(shape: [batch], values: [Float](repeating: timestep, count: batch))
            inputs["context"] = conditioning.context
            inputs["condition"] = net.image
            let out = try net.network.run(inputs)
            for k in down.indices {
                let r = out[k].toFloats()
                for j in r.indices { down[k][j] += r[j] * scale }
            }
            let r = out[down.count].toFloats()
            for j in r.indices { mid[j] += r[j] * scale }
        }
        var result: [String: Tensor] = ["mid_residual": try Tensor(shape: shapes.mid, values: mid)]
        for (k, values) in down.enumerated() { result["down_residual_\(k)"] = try Tensor(shape: shapes.down[k], values: values) }
        return result
    }
}

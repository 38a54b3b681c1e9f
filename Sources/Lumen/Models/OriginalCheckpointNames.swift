/// The names the original Stable Diffusion code (CompVis/Stability "ldm") gives the weights of a
/// single-file checkpoint, derived from diffusers' names. Facts of the format: the UNet's blocks
/// are numbered `input_blocks.N` / `output_blocks.N` with `layers_per_block + 1` entries per level,
/// the VAE decoder's `up.i` runs in reverse order of diffusers' `up_blocks`, and the VAE's
/// attention projections are called q, k, v, proj_out.
enum OriginalCheckpointNames {
    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."

    /// diffusers UNet name → original name.
    static func unet(_ name: String, layersPerBlock L: Int, upBlockHasAttention: (Int) -> Bool) -> String {
        var parts = name.split(separator: ".").map(String.init)
        func rest(_ from: Int) -> String { parts[from...].joined(separator: ".") }
        let mapped: String
        switch parts[0] {
        case "time_embedding":
            mapped = "time_embed.\(parts[1] == "linear_1" ? 0 : 2).\(rest(2))"
        case "add_embedding":
            // SDXL's added (pooled text + size) embedding: an MLP at label_emb.0 (Linear, SiLU, Linear).
            mapped = "label_emb.0.\(parts[1] == "linear_1" ? 0 : 2).\(rest(2))"
        case "conv_in":
            mapped = "input_blocks.0.0.\(rest(1))"
        case "conv_norm_out":
            mapped = "out.0.\(rest(1))"
        case "conv_out":
            mapped = "out.2.\(rest(1))"
        case "down_blocks":
            let i = Int(parts[1])!
            if parts[2] == "downsamplers" {
                mapped = "input_blocks.\((i + 1) * (L + 1)).0.op.\(rest(5))"
            } else {
                let j = Int(parts[3])!
                let index = 1 + i * (L + 1) + j
                mapped = parts[2] == "resnets" ? "input_blocks.\(index).0.\(resnet(rest(4)))" : "input_blocks.\(index).1.\(rest(4))"
            }
        case "mid_block":
            if parts[1] == "attentions" {
                mapped = "middle_block.1.\(rest(3))"
            } else {
                mapped = "middle_block.\(parts[2] == "0" ? 0 : 2).\(resnet(rest(3)))"
            }
        case "up_blocks":
            let i = Int(parts[1])!
            if parts[2] == "upsamplers" {
                mapped = "output_blocks.\(i * (L + 1) + L).\(upBlockHasAttention(i) ? 2 : 1).conv.\(rest(5))"
            } else {
                let index = i * (L + 1) + Int(parts[3])!
                mapped = parts[2] == "resnets" ? "output_blocks.\(index).0.\(resnet(rest(4)))" : "output_blocks.\(index).1.\(rest(4))"
            }
        default:
            mapped = name
        }
        parts = []
        return unetPrefix + mapped
    }

    /// diffusers ControlNetModel name → the original ControlNet's (lllyasviel's `cldm` names under
    /// `prefix`, `control_model.` in the usual files): the UNet encoder's original names, and
    /// `input_hint_block.0` / `.2k+2` / `.2n+2` for the conditioning embedding's `conv_in`,
    /// `blocks.k` and `conv_out` (n blocks; the odd indices are its SiLUs), `zero_convs.k.0` for
    /// `controlnet_down_blocks.k`, `middle_block_out.0` for `controlnet_mid_block`.
    static func controlNet(_ name: String, layersPerBlock L: Int, embeddingBlocks n: Int, prefix: String) -> String {
        let parts = name.split(separator: ".").map(String.init)
        func rest(_ from: Int) -> String { parts[from...].joined(separator: ".") }
        switch parts[0] {
        case "controlnet_cond_embedding" where parts.count >= 3:
            switch parts[1] {
            case "conv_in": return prefix + "input_hint_block.0.\(rest(2))"
            case "conv_out": return prefix + "input_hint_block.\(2 * n + 2).\(rest(2))"
            default: return prefix + "input_hint_block.\(2 * (Int(parts[2]) ?? 0) + 2).\(rest(3))"
            }
        case "controlnet_down_blocks" where parts.count >= 3:
            return prefix + "zero_convs.\(parts[1]).0.\(rest(2))"
        case "controlnet_mid_block":
            return prefix + "middle_block_out.0.\(rest(1))"
        default:
            return prefix + unet(name, layersPerBlock: L, upBlockHasAttention: { _ in false }).dropFirst(unetPrefix.count)
        }
    }

    private static func resnet(_ name: String) -> String {
        let renames = ["norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                       "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"]
        let first = name.prefix { $0 != "." }
        return (renames[String(first)] ?? String(first)) + name.dropFirst(first.count)
    }

    /// diffusers VAE name → original name. `levels` is the number of resolution levels; `prefix`
    /// is `first_stage_model.` in a full checkpoint and empty in a VAE file of its own (the
    /// fine-tuned SD VAEs name their tensors `encoder.*`, `decoder.*`, `quant_conv.*`).
    static func vae(_ name: String, levels: Int, prefix: String = vaePrefix) -> String {
        var parts = name.split(separator: ".").map(String.init)
        func rest(_ from: Int) -> String { parts[from...].joined(separator: ".") }
        func vaeResnet(_ s: String) -> String { s.hasPrefix("conv_shortcut") ? "nin_shortcut" + s.dropFirst("conv_shortcut".count) : s }
        guard parts.count >= 2, parts[0] == "encoder" || parts[0] == "decoder" else { return prefix + name }
        let side = parts[0]
        let mapped: String
        switch parts[1] {
        case "conv_norm_out":
            mapped = "norm_out.\(rest(2))"
        case "down_blocks":
            mapped = parts[3] == "downsamplers" ? "down.\(parts[2]).downsample.\(rest(5))" : "down.\(parts[2]).block.\(parts[4]).\(vaeResnet(rest(5)))"
        case "up_blocks":
            let level = levels - 1 - Int(parts[2])!
            mapped = parts[3] == "upsamplers" ? "up.\(level).upsample.\(rest(5))" : "up.\(level).block.\(parts[4]).\(vaeResnet(rest(5)))"
        case "mid_block":
            if parts[2] == "attentions" {
                let renames = ["group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"]
                let inner = parts[4] == "to_out" ? rest(6) : rest(5)
                mapped = "mid.attn_1.\(renames[parts[4]] ?? parts[4]).\(inner)"
            } else {
                mapped = "mid.block_\(parts[3] == "0" ? 1 : 2).\(vaeResnet(rest(4)))"
            }
        default:
            mapped = rest(1)
        }
        parts = []
        return prefix + side + "." + mapped
    }

    /// transformers text-encoder name → the names SD 1.x single-file checkpoints use (with and
    /// without the `text_model` level).
    static func textEncoder(_ name: String) -> [StoredTensor] {
        let inner = name.hasPrefix("text_model.") ? String(name.dropFirst("text_model.".count)) : name
        return [StoredTensor("cond_stage_model.transformer.text_model." + inner), StoredTensor("cond_stage_model.transformer." + inner)]
    }

    /// SDXL checkpoints ("sgm" names): CLIP ViT-L as a transformers model, OpenCLIP bigG's text tower.
    static let sdxlCLIPPrefix = "conditioner.embedders.0.transformer."
    static let sdxlOpenCLIPPrefix = "conditioner.embedders.1.model."
    /// An SDXL refiner's only encoder, OpenCLIP bigG, is the first embedder.
    static let sdxlRefinerOpenCLIPPrefix = "conditioner.embedders.0.model."

    /// transformers text-encoder name → SDXL's first encoder's name.
    static func sdxlTextEncoder(_ name: String) -> [StoredTensor] {
        let inner = name.hasPrefix("text_model.") ? String(name.dropFirst("text_model.".count)) : name
        return [StoredTensor(sdxlCLIPPrefix + "text_model." + inner)]
    }

    /// Where SD 2.x checkpoints keep the text encoder: OpenCLIP's text tower.
    static let openCLIPPrefix = "cond_stage_model.model."

    /// A transformers CLIPTextModel name -> the OpenCLIP name SD 2.x checkpoints store it under:
    /// `transformer.resblocks.N` for `encoder.layers.N`, `ln_1`/`ln_2`, `mlp.c_fc`/`mlp.c_proj`, and
    /// q/k/v as thirds of the fused `attn.in_proj_weight`/`in_proj_bias` (rows q, k, v).
    /// `prefix` is `cond_stage_model.model.` (SD 2.x) or `conditioner.embedders.1.model.` (SDXL's
    /// bigG), whose `text_projection` [hidden, projection] is the transpose of transformers' weight.
    static func openCLIPTextEncoder(_ name: String, prefix: String = openCLIPPrefix) -> [StoredTensor] {
        let p = prefix
        let inner = name.hasPrefix("text_model.") ? String(name.dropFirst("text_model.".count)) : name
        switch inner {
        case "text_projection.weight": return [.transposed(p + "text_projection")]
        case "embeddings.token_embedding.weight": return [StoredTensor(p + "token_embedding.weight")]
        case "embeddings.position_embedding.weight": return [StoredTensor(p + "positional_embedding")]
        case "final_layer_norm.weight": return [StoredTensor(p + "ln_final.weight")]
        case "final_layer_norm.bias": return [StoredTensor(p + "ln_final.bias")]
        default: break
        }
        let parts = inner.split(separator: ".", maxSplits: 3).map(String.init)
        guard parts.count == 4, parts[0] == "encoder", parts[1] == "layers", let layer = Int(parts[2]) else { return [StoredTensor(p + inner)] }
        let block = p + "transformer.resblocks.\(layer)."
        let rest = parts[3]
        for (i, x) in ["q", "k", "v"].enumerated() {
            for kind in ["weight", "bias"] where rest == "self_attn.\(x)_proj.\(kind)" {
                return [.rows(i, of: 3, in: block + "attn.in_proj_\(kind)")]
            }
        }
        let renames = [("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
                       ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]
        for (from, to) in renames where rest.hasPrefix(from) { return [StoredTensor(block + to + rest.dropFirst(from.count))] }
        return [StoredTensor(block + rest)]
    }
}

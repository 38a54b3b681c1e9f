import Foundation
import LumenRuntime

/// A LoRA adapter read from a `.safetensors` file, merged into the weights it adapts as they are
/// loaded: W' = W + strength · scale · up · down, with scale = alpha / rank (1 without an alpha),
/// for linear layers ([out, in]) and convolutions (down [r, in, kh, kw], up [out, r, 1, 1]).
///
/// Two layouts are read:
/// - kohya-ss / A1111: `lora_unet_<module>` and `lora_te_<module>` (SDXL: `lora_te1_`, `lora_te2_`),
///   the module path with its dots written as underscores (the UNet's in diffusers' names, as
///   kohya writes SD 1.x/2.x LoRAs, or in the original ones, `input_blocks_4_1_…`, as it writes
///   SDXL's), each with `.lora_down.weight`, `.lora_up.weight` and an optional scalar `.alpha`;
/// - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` and
///   `text_encoder.<module>…` / `text_encoder_2.<module>…` (with or without transformers'
///   `text_model.`), optional `.alpha`; also the names diffusers' training scripts save
///   (`<module>.lora.down.weight` / `.lora.up.weight`, `<module>.lora_linear_layer.down.weight` /
///   `.up.weight`) and the attention processors' of diffusers before 0.18
///   (`…attn1.processor.to_q_lora.down.weight`, `to_out_lora` for `to_out.0`, UNet keys without the
///   `unet.` prefix; in a text encoder `to_q_lora` is `q_proj`), as diffusers' loader maps them.
public final class LoRA: @unchecked Sendable {
    public enum Network: String, Sendable { case unet, textEncoder = "text_encoder", textEncoder2 = "text_encoder_2" }

    struct Factors {
        let key: String  // the module's key in the file, for messages
        let down: Tensor, up: Tensor
        var alpha: Float?
        /// PEFT's rank-stabilised scaling (`use_rslora`): alpha / √r instead of alpha / r.
        var rsLoRA = false
        /// DoRA's magnitude per output row (PEFT's `lora_magnitude_vector`): the adapted weight's
        /// rows are rescaled to these norms.
        var magnitude: Tensor? = nil
        var rank: Int { down.shape[0] }
        var scale: Float { alpha.map { rsLoRA ? $0 / Float(rank).squareRoot() : $0 / Float(rank) } ?? 1 }
    }

    /// How a file names an adapted module.
    enum ModuleKey: Hashable {
        /// The canonical module path (`down_blocks.0.…to_q`, `text_model.encoder.layers.0.self_attn.q_proj`).
        case canonical(String)
        /// kohya-ss's underscored path as written (`down_blocks_0_…to_q`, or the original
        /// checkpoints' `input_blocks_4_1_…`), matched against the model's modules in `factors`.
        case kohya(underscored: String)
    }

    public let path: String
    /// Adapted modules by network and the key the file names them by.
    let modules: [Network: [ModuleKey: Factors]]
    /// UNet tensors in diffusers' older names that diffusers' loader leaves out, as Lumen does: a
    /// file whose first UNet tensor has PEFT's name (`lora_A`) is read as PEFT's layout alone, so
    /// `lora.down`/`lora.up` and processor names beside it adapt nothing (diffusers' training
    /// scripts write such files when they adapt more than the attention projections).
    public let ignoredTensors: [String]
    /// DoRA's magnitude vectors (`<module>.dora_scale`, kohya/LyCORIS DoRA files), which diffusers'
    /// SD and SDXL loaders filter out of the file: the low-rank factors apply as a plain LoRA.
    public let ignoredDoRAScales: [String]
    /// A one-line notice when tensors were ignored, for a front end to show.
    public var notice: String? {
        var parts: [String] = []
        if let first = ignoredTensors.first {
            parts.append("\(ignoredTensors.count) UNet tensors in diffusers' older LoRA names (e.g. '\(first)') sit beside PEFT's "
                         + "lora_A/lora_B names; diffusers' loader reads such a file as PEFT's layout alone and leaves them out, and so does Lumen")
        }
        if !ignoredDoRAScales.isEmpty {
            parts.append("a DoRA file: its \(ignoredDoRAScales.count) magnitude tensors (dora_scale) are left out, as diffusers' loader "
                         + "leaves them out, and its factors apply as a plain LoRA (AUTOMATIC1111 and ComfyUI also rescale each row to the magnitude)")
        }
        return parts.isEmpty ? nil : "\(path): " + parts.joined(separator: "; ")
    }
    public var moduleCount: Int { modules.values.map(\.count).reduce(0, +) }

    public init(path: String) throws {
        self.path = path
        let file = try SafetensorsFile(path: path)
        var parts: [Network: [ModuleKey: (down: Tensor?, up: Tensor?, alpha: Float?, magnitude: Tensor?, key: String)]] = [:]
        var unknown: [String] = []
        // diffusers' load_lora_adapter: "lora_A" in the first UNet key (alphas aside, which its
        // loader takes out before) means PEFT's layout, and the other names are not converted.
        let unetNames = file.names.filter { name in
            guard let (network, module, _) = Self.classify(name), network == .unet, case .canonical = module else { return false }
            return !name.hasSuffix(".alpha")
        }
        let peftOnly = unetNames.first?.contains("lora_A") == true
        var ignored: [String] = [], ignoredModules: Set<ModuleKey> = [], doraScales: [String] = []
        for name in file.names {
            // diffusers' SD/SDXL loaders drop every key with "dora_scale" before reading the rest.
            if name.contains("dora_scale") { doraScales.append(name); continue }
            guard let (network, module, role) = Self.classify(name) else { unknown.append(name); continue }
            if peftOnly, network == .unet, case .canonical = module, !name.hasSuffix(".alpha"),
               !name.hasSuffix(".lora_A.weight"), !name.hasSuffix(".lora_B.weight"), !name.hasSuffix(".lora_magnitude_vector") {
                ignored.append(name)
                ignoredModules.insert(module)
                continue
            }
            var entry = parts[network, default: [:]][module] ?? (nil, nil, nil, nil, String(name.prefix { $0 != "." }))
            let t = try file.tensor(name)
            switch role {
            case "down": entry.down = t
            case "up": entry.up = t
            case "magnitude": entry.magnitude = t
            default:
                guard t.count == 1 else {
                    throw ModelFileError.wrongShape(path: path, tensor: name, expected: [], got: t.shape)
                }
                entry.alpha = try t.converted(to: .f32).toFloats()[0]
            }
            parts[network, default: [:]][module] = entry
        }
        if !unknown.isEmpty {
            throw ModelFileError.unsupported(
                path: path, detail: "\(unknown.count) tensors of no LoRA layout Lumen reads (kohya lora_unet_/lora_te_ with "
                    + "lora_down/lora_up/alpha, or diffusers unet./text_encoder. with lora_A/lora_B, lora.down/lora.up, "
                    + "lora_linear_layer.down/up or processor to_q_lora.down/up), e.g. '\(unknown[0])'")
        }
        var modules: [Network: [ModuleKey: Factors]] = [:]
        for (network, entries) in parts {
            for (module, e) in entries {
                // An ignored module's alpha alone has nothing to scale.
                if network == .unet, ignoredModules.contains(module), e.down == nil, e.up == nil { continue }
                guard let down = e.down, let up = e.up else {
                    throw ModelFileError.missingTensor(path: path, tensor: "\(e.key): " + (e.down == nil ? "the down (A) factor" : "the up (B) factor"))
                }
                let r = down.shape.dims.first ?? 0
                guard down.shape.rank >= 2, up.shape.rank >= 2, up.shape[1] == r, r > 0,
                      up.shape.dims.dropFirst(2).allSatisfy({ $0 == 1 }) else {
                    throw ModelFileError.wrongShape(path: path, tensor: "\(e.key) up·down", expected: [up.shape[0], r], got: up.shape)
                }
                if let m = e.magnitude, m.count != up.shape[0] {
                    throw ModelFileError.wrongShape(path: path, tensor: "\(e.key).lora_magnitude_vector", expected: [up.shape[0]], got: m.shape)
                }
                modules[network, default: [:]][module] = Factors(key: e.key, down: down, up: up, alpha: e.alpha, magnitude: e.magnitude)
            }
        }
        guard !modules.isEmpty else { throw ModelFileError.malformed(path: path, detail: "no LoRA tensors") }
        try Self.applyAdapterMetadata(file, to: &modules)
        self.modules = modules
        ignoredTensors = ignored
        ignoredDoRAScales = doraScales
    }

    /// (network, canonical module path, "down" | "up" | "alpha") of a tensor name, nil when the
    /// name follows neither layout.
    static func classify(_ name: String) -> (Network, ModuleKey, String)? {
        let kohya: [(String, Network)] = [("lora_unet_", .unet), ("lora_te_", .textEncoder), ("lora_te1_", .textEncoder),
                                          ("lora_te2_", .textEncoder2)]
        if let (prefix, network) = kohya.first(where: { name.hasPrefix($0.0) }) {
            guard let dot = name.firstIndex(of: ".") else { return nil }
            let key = String(name[..<dot]), suffix = String(name[name.index(after: dot)...])
            let role = ["lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"][suffix]
            guard let role else { return nil }
            // The underscored path is matched against the model's modules later (see `factors`).
            return (network, .kohya(underscored: String(key.dropFirst(prefix.count))), role)
        }
        // diffusers' layouts. The network from the prefix; UNet keys without one (the attention
        // processors' files of diffusers before 0.18) start at the UNet's own blocks.
        var network: Network, module: String
        if let (prefix, n) = [("unet.", Network.unet), ("text_encoder_2.", .textEncoder2), ("text_encoder.", .textEncoder)]
            .first(where: { name.hasPrefix($0.0) }) {
            network = n
            module = String(name.dropFirst(prefix.count))
        } else if ["down_blocks.", "mid_block.", "up_blocks."].contains(where: { name.hasPrefix($0) }) {
            network = .unet
            module = name
        } else {
            return nil
        }
        module = module.replacingOccurrences(of: ".processor.", with: ".")
        // The attention processors' factors, named after the projection they adapt.
        for (old, unetModule, textModule) in [("to_q_lora", "to_q", "q_proj"), ("to_k_lora", "to_k", "k_proj"),
                                              ("to_v_lora", "to_v", "v_proj"), ("to_out_lora", "to_out.0", "out_proj")] {
            for (suffix, role) in [(".down.weight", "down"), (".up.weight", "up")] where module.hasSuffix("." + old + suffix) {
                module.removeLast(old.count + suffix.count)
                return (network, .canonical(canonical(network, module + (network == .unet ? unetModule : textModule))), role)
            }
        }
        // PEFT's names, and those diffusers' training scripts save (its convert_state_dict_to_diffusers:
        // `lora.down` / `lora.up` for the UNet's attention projections, `lora_linear_layer.down` /
        // `.up` for the text encoders').
        for (suffix, role) in [(".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"),
                               (".lora.up.weight", "up"), (".lora_linear_layer.down.weight", "down"),
                               (".lora_linear_layer.up.weight", "up"), (".alpha", "alpha"),
                               (".lora_magnitude_vector", "magnitude")] where module.hasSuffix(suffix) {
            module.removeLast(suffix.count)
            return (network, .canonical(canonical(network, module)), role)
        }
        return nil
    }

    /// diffusers' `lora_adapter_metadata` (the PEFT `LoraConfig` of each network, saved in the
    /// safetensors header by `save_lora_weights(…, unet_lora_adapter_metadata=…)` as
    /// "unet.lora_alpha", "text_encoder.r", …): where a network has one, diffusers builds its
    /// adapter from it alone, so its modules take `lora_alpha` (or their `alpha_pattern` entry, matched
    /// as PEFT matches module names) and `use_rslora`, whatever alphas the file's tensors hold.
    static func applyAdapterMetadata(_ file: SafetensorsFile, to modules: inout [Network: [ModuleKey: Factors]]) throws {
        guard let text = file.metadata["lora_adapter_metadata"] else { return }
        guard let all = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ModelFileError.malformed(path: file.path, detail: "__metadata__ lora_adapter_metadata is not a JSON object")
        }
        for (network, entries) in modules {
            let prefix = network.rawValue + "."
            var config: [String: Any] = [:]
            for (k, v) in all where k.hasPrefix(prefix) { config[String(k.dropFirst(prefix.count))] = v }
            guard !config.isEmpty else { continue }
            func number(_ v: Any?) -> Double? { (v as? NSNumber)?.doubleValue }
            let alpha = number(config["lora_alpha"]) ?? 8  // LoraConfig's defaults
            let r = number(config["r"]) ?? 8
            let rsLoRA = (config["use_rslora"] as? Bool) ?? false
            let alphaPattern = (config["alpha_pattern"] as? [String: Any]) ?? [:]
            let rankPattern = (config["rank_pattern"] as? [String: Any]) ?? [:]
            var updated = entries
            for (key, var f) in entries {
                guard case .canonical(let module) = key else { continue }
                // A pattern matches the end of the module path (with or without text_model.).
                let name = module
                let rank = patternValue(rankPattern, module: name).flatMap(number) ?? r
                guard Int(rank) == f.rank else {
                    throw ModelFileError.wrongShape(path: file.path, tensor: "\(f.key) (rank \(Int(rank)) in lora_adapter_metadata)",
                                                    expected: [Int(rank)], got: f.down.shape)
                }
                f.alpha = Float(patternValue(alphaPattern, module: name).flatMap(number) ?? alpha)
                f.rsLoRA = rsLoRA
                updated[key] = f
            }
            modules[network] = updated
        }
    }

    /// PEFT's `get_pattern_key`: the first pattern that matches the module name's end (after a dot).
    static func patternValue(_ patterns: [String: Any], module: String) -> Any? {
        for (pattern, value) in patterns.sorted(by: { $0.key < $1.key }) {
            guard let regex = try? NSRegularExpression(pattern: "^(.*\\.)?(\(pattern))$") else { continue }
            if regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil { return value }
        }
        return nil
    }

    /// The factors adapting weight `weightName` (canonical, ending in `.weight`) of `network`;
    /// `originalName` is the weight's name in the original checkpoints (for kohya's SDXL UNet keys).
    func factors(_ network: Network, weightName: String, originalName: String? = nil) -> Factors? {
        guard weightName.hasSuffix(".weight"), let entries = modules[network] else { return nil }
        let module = Self.canonical(network, String(weightName.dropLast(".weight".count)))
        if let f = entries[.canonical(module)] ?? entries[.kohya(underscored: module.replacingOccurrences(of: ".", with: "_"))] { return f }
        guard let originalName, originalName.hasSuffix(".weight") else { return nil }
        return entries[.kohya(underscored: originalName.dropLast(".weight".count).replacingOccurrences(of: ".", with: "_"))]
    }

    /// How weight `weightName` (canonical, ending in `.weight`) of `network` is adapted: the factor
    /// its low-rank update is multiplied by before the strength (alpha / r, alpha / √r with
    /// rsLoRA, 1 without an alpha) and whether DoRA rescales its rows; nil where it is not adapted.
    public func adaptation(_ network: Network, weightName: String) -> (scale: Float, dora: Bool)? {
        factors(network, weightName: weightName).map { ($0.scale, $0.magnitude != nil) }
    }

    /// A text encoder's module path with transformers' `text_model.` prefix, which files written by
    /// transformers 5 leave out.
    static func canonical(_ network: Network, _ module: String) -> String {
        network == .unet || module.hasPrefix("text_model.") ? module : "text_model." + module
    }

    /// `weight` plus `strength` times the update of `f` (the factors `factors` found for it), in f32.
    func merged(_ f: Factors, weightName: String, weight: Tensor, strength: Float) throws -> Tensor {
        let out = weight.shape[0], r = f.down.shape[0]
        let inner = f.down.count / r
        guard weight.shape.rank >= 2, f.up.shape[0] == out, weight.count == out * inner else {
            throw ModelFileError.wrongShape(path: path, tensor: "\(f.key) (adapting \(weightName))",
                                            expected: weight.shape, got: Shape([f.up.shape[0]] + f.down.shape.dims.dropFirst()))
        }
        var w = try weight.converted(to: .f32).toFloats()
        let down = try f.down.converted(to: .f32).toFloats(), up = try f.up.converted(to: .f32).toFloats()
        let s = strength * f.scale
        for o in 0..<out {
            for k in 0..<r {
                let u = s * up[o * r + k]
                if u == 0 { continue }
                let row = k * inner, dst = o * inner
                for j in 0..<inner { w[dst + j] += u * down[row + j] }
            }
        }
        if let magnitude = f.magnitude {
            // DoRA (PEFT's merge): each row of W + s·BA rescaled to its magnitude, m / ‖row‖.
            let m = try magnitude.converted(to: .f32).toFloats()
            for o in 0..<out {
                let norm = w[(o * inner)..<((o + 1) * inner)].reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                let factor = Float(Double(m[o]) / norm)
                for j in (o * inner)..<((o + 1) * inner) { w[j] *= factor }
            }
        }
        return try Tensor(shape: weight.shape, values: w)
    }
}

/// A LoRA and how strongly to apply it.
public struct LoRAWeight: Sendable {
    public var path: String
    public var strength: Float
    public init(path: String, strength: Float = 1) {
        self.path = path
        self.strength = strength
    }
}

import ArgumentParser
import Foundation
import Lumen

extension GenerateCommand {
    /// The numeric flags' ranges, checked before any of them is used (the output paths are formed
    /// from --count, the pipeline multiplies --width by --height), each error naming its flag.
    func validateNumbers() throws {
        guard (1...64).contains(count) else { throw ValidationError("--count \(count): expected 1…64 images") }
        guard (1...1000).contains(steps) else { throw ValidationError("--steps \(steps): expected 1…1000") }
        for (flag, value) in [("--width", width), ("--height", height)] {
            if let value, !(1...GenerationRequest.maxSide).contains(value) {
                throw ValidationError("\(flag) \(value): expected 1…\(GenerationRequest.maxSide) pixels (a multiple of 8)")
            }
        }
        let maxGuidance = GenerationRequest.maxGuidanceScale
        guard guidance.isFinite, guidance >= 0, guidance <= maxGuidance else {
            throw ValidationError("--guidance \(guidance): expected 0…\(Int(maxGuidance)) (up to 1 turns guidance off; models use 1–20, "
                                  + "and larger values only overflow)")
        }
        guard imageGuidance.isFinite, imageGuidance >= 0, imageGuidance <= maxGuidance else {
            throw ValidationError("--image-guidance \(imageGuidance): expected 0…\(Int(maxGuidance)) (an InstructPix2Pix model's image guidance; 1.5 by default)")
        }
        guard eta.isFinite, (0...1).contains(eta) else {
            throw ValidationError("--eta \(eta): expected 0…1 (DDIM's share of fresh noise in each step, TCD's gamma; 0 is deterministic)")
        }
        guard guidanceRescale.isFinite, (0...1).contains(guidanceRescale) else {
            throw ValidationError("--guidance-rescale \(guidanceRescale): expected 0…1 (the share of the rescaled prediction; 0 is off)")
        }
        guard strength.isFinite, strength > 0, strength <= 1 else {
            throw ValidationError("--strength \(strength): expected a number in (0, 1]")
        }
        guard clipSkip >= 0 else { throw ValidationError("--clip-skip \(clipSkip): expected 0 or more") }
        if let maskBlur, !(maskBlur.isFinite && maskBlur >= 0 && maskBlur <= Float(GenerationRequest.maxSide)) {
            throw ValidationError("--mask-blur \(maskBlur): expected 0…\(GenerationRequest.maxSide) pixels")
        }
        if let maskCrop, !(0...GenerationRequest.maxSide).contains(maskCrop) {
            throw ValidationError("--mask-crop \(maskCrop): expected a padding of 0…\(GenerationRequest.maxSide) pixels")
        }
        for lora in loras {
            if lora.strength.isNaN, lora.path.contains(":"), !FileManager.default.fileExists(atPath: lora.path),
               let colon = lora.path.lastIndex(of: ":") {
                let file = lora.path[..<colon], text = lora.path[lora.path.index(after: colon)...]
                throw ValidationError("--lora \(lora.path): the strength '\(text)' is not a number (expected PATH or PATH:STRENGTH, e.g. \(file):0.8)")
            }
            guard lora.strength.isFinite, abs(lora.strength) <= LoRAWeight.maxStrength else {
                throw ValidationError("--lora \(lora.path):\(lora.strength): expected a strength in -\(Int(LoRAWeight.maxStrength))…\(Int(LoRAWeight.maxStrength)) "
                                      + "(1 is the trained effect)")
            }
        }
        if let config = files.config {
            var isDir: ObjCBool = false
            let modelPath = model ?? DefaultModel.locate()?.path
            if let modelPath, FileManager.default.fileExists(atPath: modelPath, isDirectory: &isDir), isDir.boolValue {
                throw ValidationError("--config \(config): the model \(modelPath) is a diffusers folder, which has its own configs; "
                                      + "--config describes a single-file checkpoint")
            }
        }
    }
}

extension GenerateCommand {
    /// CONTROLNET:PNG[:SCALE], read from the right so that only the last colons separate.
    /// SCALE is nil when the spec leaves it out (the pipeline's default then applies).
    static func parseControl(_ spec: String) -> (path: String, image: String, scale: Float?)? {
        var parts = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var scale: Float?
        if parts.count >= 3, let s = Float(parts[parts.count - 1]), s.isFinite {
            scale = s
            parts.removeLast()
        }
        guard parts.count >= 2, let image = parts.last, !image.isEmpty else { return nil }
        let path = parts.dropLast().joined(separator: ":")
        return path.isEmpty ? nil : (path, image, scale)
    }

    /// A control image: a PNG as it is, or `canny=PHOTO.png`, the photo's Canny edges.
    static func controlImage(_ spec: String) throws -> InitImage {
        guard spec.hasPrefix("canny=") else { return try InitImage(pngPath: spec) }
        let (photo, _) = try RGBImage.readPNG(String(spec.dropFirst("canny=".count)))
        let edges = try photo.cannyEdges()
        return InitImage(width: edges.width, height: edges.height, rgb: edges.pixels.map { Float($0) / 255 })
    }
}

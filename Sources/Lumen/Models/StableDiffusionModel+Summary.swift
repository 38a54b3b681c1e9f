import Foundation
import LumenRuntime

extension StableDiffusionModel {
    /// What one network of the model holds on disk.
    public struct NetworkSummary: Sendable, Codable {
        public let name: String
        public let parameters: Int
        /// Parameter counts by file dtype ("F16": 123, …).
        public let dtypes: [String: Int]
        public let files: [String]
    }

    /// Parameter counts and dtypes per network, from the files' headers (integer buffers such
    /// as `position_ids` are not parameters and are left out).
    public func summary() -> [NetworkSummary] {
        func summarize(_ name: String, _ store: SafetensorsWeights) -> NetworkSummary {
            let prefix = store.scope
            var total = 0, dtypes: [String: Int] = [:]
            for f in store.files {
                for (key, e) in f.entries where e.dtype?.isFloatingPoint ?? false || e.fileDType == "F64" {
                    if let prefix, !key.hasPrefix(prefix) { continue }
                    if key.hasPrefix("model_ema.") { continue }
                    total += e.shape.count
                    dtypes[e.fileDType, default: 0] += e.shape.count
                }
            }
            return NetworkSummary(name: name, parameters: total, dtypes: dtypes, files: store.files.map(\.path))
        }
        return [summarize(refiner == nil ? "text_encoder" : "text_encoder_2", textEncoderWeights)]
            + (xl.map { [summarize("text_encoder_2", $0.textEncoder2Weights)] } ?? [])
            + [summarize("unet", unetWeights), summarize("vae", vaeWeights)]
    }
}

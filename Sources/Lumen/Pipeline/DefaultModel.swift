import Foundation

/// The model `lumen generate` uses without `--model`, and the CLIP vocabulary for models that
/// carry none (single-file checkpoints).
///
/// Until a trained demo model ships, the default is the tiny random-weight test model of the
/// repository: it runs the whole pipeline, and its images are noise. It is found, in order, at
/// `$LUMEN_DEFAULT_MODEL`, at `lumen-default-model` beside the executable, and in the source
/// tree this binary was built from (`Models/demo`, then `Tests/Fixtures/tiny-sd`).
public enum DefaultModel {
    public struct Location: Sendable, Equatable {
        public let path: String
        /// True for the random-weight test model, whose images are noise.
        public let isRandomTestModel: Bool
    }

    static let sourceRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    public static func locate() -> Location? {
        let fm = FileManager.default
        func isModel(_ p: String) -> Bool { fm.fileExists(atPath: p + "/unet") || fm.fileExists(atPath: p + "/model_index.json") }
        if let env = ProcessInfo.processInfo.environment["LUMEN_DEFAULT_MODEL"], !env.isEmpty {
            return Location(path: env, isRandomTestModel: false)
        }
        let exeDir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").deletingLastPathComponent().path
        if isModel(exeDir + "/lumen-default-model") { return Location(path: exeDir + "/lumen-default-model", isRandomTestModel: false) }
        if isModel(sourceRoot + "/Models/demo") { return Location(path: sourceRoot + "/Models/demo", isRandomTestModel: false) }
        if isModel(sourceRoot + "/Tests/Fixtures/tiny-sd") { return Location(path: sourceRoot + "/Tests/Fixtures/tiny-sd", isRandomTestModel: true) }
        return nil
    }

    /// A folder with the standard CLIP vocabulary (vocab.json + merges.txt), if one is at hand.
    public static var clipTokenizerFolder: String? {
        guard let m = locate() else { return nil }
        let p = m.path + "/tokenizer"
        return FileManager.default.fileExists(atPath: p + "/vocab.json") || FileManager.default.fileExists(atPath: p + "/tokenizer.json") ? p : nil
    }
}

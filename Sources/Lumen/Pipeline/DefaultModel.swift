import CLumenDemoModel
import Foundation
import LumenRuntime

/// The model `lumen generate` uses without `--model`, and the CLIP vocabulary for models that
/// carry none (single-file checkpoints): the small trained demo model of the shapes world
/// (Models/demo, tools/train_demo_model.py, docs/quality.md).
///
/// Its files are built into the binary (Sources/CLumenDemoModel), so a copied `lumen` needs no
/// download and no repository. It is found, in order, at `$LUMEN_DEFAULT_MODEL`, at
/// `lumen-default-model` beside the executable, in the source tree this binary was built from
/// (`Models/demo`), and otherwise the embedded copy is written once to
/// `$XDG_CACHE_HOME/lumen` (or `~/.cache/lumen`, or the temporary folder) and read from there.
public enum DefaultModel {
    public struct Location: Sendable, Equatable {
        public let path: String
    }

    static let sourceRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    public static func locate() -> Location? {
        let fm = FileManager.default
        func isModel(_ p: String) -> Bool { fm.fileExists(atPath: p + "/unet") || fm.fileExists(atPath: p + "/model_index.json") }
        if let env = ProcessInfo.processInfo.environment["LUMEN_DEFAULT_MODEL"], !env.isEmpty {
            return Location(path: env)
        }
        let exeDir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").deletingLastPathComponent().path
        if isModel(exeDir + "/lumen-default-model") { return Location(path: exeDir + "/lumen-default-model") }
        if isModel(sourceRoot + "/Models/demo") { return Location(path: sourceRoot + "/Models/demo") }
        if let extracted = try? extractEmbedded() { return Location(path: extracted) }
        return nil
    }

    /// A folder with the standard CLIP vocabulary (vocab.json + merges.txt), if one is at hand.
    public static var clipTokenizerFolder: String? {
        guard let m = locate() else { return nil }
        let p = m.path + "/tokenizer"
        return FileManager.default.fileExists(atPath: p + "/vocab.json") || FileManager.default.fileExists(atPath: p + "/tokenizer.json") ? p : nil
    }

    /// The demo model's files inside this binary: path in the model folder, and bytes.
    public static var embeddedFiles: [(path: String, bytes: UnsafeRawBufferPointer)] {
        var count = 0
        guard let table = lumen_demo_model_files(&count) else { return [] }
        return (0..<count).map { i in
            let f = table[i]
            return (String(cString: f.path), UnsafeRawBufferPointer(start: f.start, count: f.end - f.start))
        }
    }

    /// Writes the embedded demo model into `folder` (created; files replaced), via a temporary
    /// sibling folder renamed into place, so that a reader never sees half of it. The staging
    /// folder is made by mkdtemp (a new folder under a random name), so nothing planted at a
    /// predictable name is written through.
    public static func writeEmbedded(to folder: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: (folder as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var template = Array((folder + ".partial-XXXXXX").utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw FileError.cannotWrite(path: folder, reason: String(cString: strerror(errno)))
        }
        let staging = String(cString: template)
        for (path, bytes) in embeddedFiles {
            let target = (staging as NSString).appendingPathComponent(path)
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: target))
        }
        try? fm.removeItem(atPath: folder)
        try fm.createDirectory(atPath: (folder as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try fm.moveItem(atPath: staging, toPath: folder)
    }

    /// The embedded model written to the cache folder (once per distinct model: the folder is
    /// named by the files' total size and a checksum), returning its path.
    static func extractEmbedded() throws -> String {
        let files = embeddedFiles
        guard !files.isEmpty else { throw CocoaError(.fileNoSuchFile) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a over the paths, sizes and the first and last 4 KiB
        func mix<S: Sequence>(_ s: S) where S.Element == UInt8 { for b in s { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 } }
        for (path, bytes) in files {
            mix(Array(path.utf8))
            mix(withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { Array($0) })
            mix(bytes.prefix(4096))
            mix(bytes.suffix(4096))
        }
        let env = ProcessInfo.processInfo.environment
        let cache = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? env["HOME"].flatMap { $0.isEmpty ? nil : $0 + "/.cache" } ?? NSTemporaryDirectory()
        let folder = cache + "/lumen/demo-model-" + String(hash, radix: 16)
        let fm = FileManager.default
        let complete = files.allSatisfy { f in
            ((try? fm.attributesOfItem(atPath: folder + "/" + f.path))?[.size] as? NSNumber)?.intValue == f.bytes.count
        }
        if !complete { try writeEmbedded(to: folder) }
        return folder
    }
}

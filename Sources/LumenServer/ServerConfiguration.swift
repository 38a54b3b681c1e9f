import Foundation
import Lumen

/// What `lumen serve` was told on its command line.
public struct ServerConfiguration: Sendable {
    /// Loopback unless told otherwise.
    public var host = "127.0.0.1"
    /// 0 asks the kernel for a free port (the tests); `ServerHandle.port` says which.
    public var port = 7860
    /// Model files or folders (`--model`), named by their base name.
    public var modelPaths: [String] = []
    /// Folders whose entries are models (`--models-dir`).
    public var modelsDirs: [String] = []
    /// With a key, every API route needs `Authorization: Bearer KEY`.
    public var apiKey: String? = nil
    /// Jobs that may wait behind the running ones; one more is refused with 429.
    public var queueLimit = 8
    public var backend: Backend = .auto
    /// Loaded pipelines kept at once (least recently used dropped first).
    public var maxLoadedModels = 2
    /// Bytes the loaded pipelines' weights may take together (`Pipeline.weightBytes`); loading
    /// one drops the least recently used idle ones until they fit. nil: no bound but the count.
    public var modelMemoryBytes: Int? = nil
    /// A TAESD / TAESDXL decoder for step previews (`--preview-taesd`): every `previewEvery`-th step
    /// of a job carries its first image's preview (base64 PNG) in its `step` event and in
    /// `/sdapi/v1/progress`'s `current_image`. Models whose latent space it does not fit get none.
    public var previewTAESD: String? = nil
    public var previewEvery = 5
    /// Seconds without an event after which a job's event stream gets a `: keep-alive` comment
    /// (while the job waits in the queue or between slow steps); 0: none.
    public var eventsKeepAlive = 15.0
    /// Request bodies larger than this are refused with 413.
    public var maxBodyBytes = 16 << 20
    /// Decoded images (init images, masks, png-info) larger than this are refused with 413.
    public var maxImagePixels = 2048 * 2048
    /// Output size limits (pixels per side), steps and images per request.
    public var maxSide = 2048
    public var maxSteps = 150
    public var maxImagesPerRequest = 8

    public init() {}
}

/// Models the server may load, by name. A request only ever names one of these; it never
/// carries a path.
public struct ModelCatalog: Sendable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        let path: String
    }

    public let entries: [Entry]

    /// The built-in demo model when no model is given.
    public init(modelPaths: [String], modelsDirs: [String]) throws {
        var entries: [Entry] = []
        let fm = FileManager.default
        func add(_ path: String) throws {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
                throw ServerSetupError("--model \(path): no such file or folder")
            }
            let last = (path as NSString).lastPathComponent
            let name = isDir.boolValue ? last : (last as NSString).deletingPathExtension
            if entries.contains(where: { $0.name == name }) {
                throw ServerSetupError("--model \(path): a model named \"\(name)\" is already listed (names are base names)")
            }
            entries.append(Entry(name: name, path: path))
        }
        for p in modelPaths { try add(p) }
        for dir in modelsDirs {
            guard let items = try? fm.contentsOfDirectory(atPath: dir) else {
                throw ServerSetupError("--models-dir \(dir): not a readable folder")
            }
            for item in items.sorted() where !item.hasPrefix(".") {
                let p = (dir as NSString).appendingPathComponent(item)
                var isDir: ObjCBool = false
                fm.fileExists(atPath: p, isDirectory: &isDir)
                if isDir.boolValue ? fm.fileExists(atPath: p + "/unet") || fm.fileExists(atPath: p + "/model_index.json")
                    : item.hasSuffix(".safetensors") {
                    try add(p)
                }
            }
        }
        if entries.isEmpty {
            guard let demo = DefaultModel.locate() else {
                throw ServerSetupError("no --model or --models-dir given and no built-in model found")
            }
            entries.append(Entry(name: "demo", path: demo.path))
        }
        self.entries = entries
    }

    public var defaultName: String { entries[0].name }

    /// The entry a request names (nil or "" = the first), or a 400/404 error that names only
    /// what the client sent.
    func entry(named name: String?) throws -> Entry {
        guard let name, !name.isEmpty else { return entries[0] }
        if name.contains("/") || name.contains("\\") || name.contains("..") || name.hasPrefix("~") {
            throw APIError(status: .badRequest, message: "model \"\(name)\": a model is named by its name from GET /v1/models, never by a path",
                           param: "model", code: "invalid_model")
        }
        guard let e = entries.first(where: { $0.name == name }) else {
            throw APIError(status: .notFound, message: "The model '\(name)' does not exist; GET /v1/models lists this server's models",
                           type: "invalid_request_error", param: "model", code: "model_not_found")
        }
        return e
    }
}

/// A problem with the command line, found before the server starts.
public struct ServerSetupError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

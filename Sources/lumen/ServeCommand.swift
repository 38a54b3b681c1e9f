import ArgumentParser
import Foundation
import Lumen
import LumenServer

/// `lumen serve`: keeps models loaded and answers the OpenAI images API and AUTOMATIC1111's API.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the OpenAI images API and AUTOMATIC1111's API over HTTP, with models kept loaded.")

    @Option(help: "Address to bind (loopback by default; 0.0.0.0 exposes the server to the network).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port, printed).")
    var port = 7860

    @Option(name: .customLong("model"), help: "A model (diffusers folder or .safetensors file), named by its base name; repeat for several (default: the built-in demo model).")
    var models: [String] = []

    @Option(name: .customLong("models-dir"), help: "A folder whose model folders and .safetensors files are served by their base names.")
    var modelsDirs: [String] = []

    @Option(name: .customLong("api-key"), help: "Require `Authorization: Bearer KEY` on every API route.")
    var apiKey: String?

    @Option(help: "Jobs that may wait behind the running one; more are refused with 429 and Retry-After.")
    var queue = 8

    @Option(help: "Executor: auto, cpu or vulkan.")
    var backend = BackendArgument.auto

    @Option(name: .customLong("max-loaded-models"), help: "Models kept loaded at once (least recently used dropped first).")
    var maxLoadedModels = 2

    @Option(name: .customLong("model-memory"),
            help: "Bytes the loaded models' weights may take together (e.g. 12G); loading one drops the least recently used idle ones until they fit.")
    var modelMemory: String?

    @Option(name: .customLong("preview-taesd"),
            help: "A TAESD (or TAESDXL) decoder, folder or file: jobs' step events and /sdapi/v1/progress carry a preview every --preview-every steps (models it does not fit get none).")
    var previewTAESD: String?

    @Option(name: .customLong("preview-every"), help: "Steps between previews with --preview-taesd.")
    var previewEvery = 5

    @Option(name: .customLong("events-keep-alive"),
            help: "Seconds without an event after which a job's event stream gets a `: keep-alive` comment (0: none).")
    var eventsKeepAlive = 15.0

    @Option(name: .customLong("max-side"), help: "Largest width or height a request may ask for.")
    var maxSide = 2048

    @Option(name: .customLong("max-steps"), help: "Most steps a request may ask for.")
    var maxSteps = 150

    @Option(name: .customLong("max-body"), help: "Largest request body in bytes (larger: 413).")
    var maxBody = 16 << 20

    func validate() throws {
        if queue < 0 { throw ValidationError("--queue \(queue): expected 0 or more") }
        if port < 0 || port > 65535 { throw ValidationError("--port \(port): expected 0 to 65535") }
        if maxLoadedModels < 1 { throw ValidationError("--max-loaded-models \(maxLoadedModels): expected 1 or more") }
        if let modelMemory, (MemoryBudget.parse(modelMemory) ?? 0) < 1 {
            throw ValidationError("--model-memory \(modelMemory): expected bytes or a number with K, M, G or T (e.g. 12G)")
        }
        if !(eventsKeepAlive >= 0 && eventsKeepAlive <= 3600) {
            throw ValidationError("--events-keep-alive \(eventsKeepAlive): expected 0 (none) to 3600 seconds")
        }
        if previewEvery < 1 { throw ValidationError("--preview-every \(previewEvery): expected 1 or more") }
        if let previewTAESD, !FileManager.default.fileExists(atPath: previewTAESD) {
            throw ValidationError("--preview-taesd \(previewTAESD): no such file or folder")
        }
        if maxSide < 8 || maxSteps < 1 || maxBody < 1024 {
            throw ValidationError("--max-side must be at least 8, --max-steps at least 1 and --max-body at least 1024")
        }
    }

    func run() throws {
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.modelPaths = models
        config.modelsDirs = modelsDirs
        config.apiKey = apiKey
        config.queueLimit = queue
        config.backend = backend.backend(device: nil)
        config.maxLoadedModels = maxLoadedModels
        config.modelMemoryBytes = modelMemory.flatMap(MemoryBudget.parse)
        config.maxSide = maxSide
        config.maxSteps = maxSteps
        config.maxBodyBytes = maxBody
        config.previewTAESD = previewTAESD
        config.previewEvery = previewEvery
        config.eventsKeepAlive = eventsKeepAlive
        let server: LumenServer
        do { server = try LumenServer(configuration: config) } catch let e as ServerSetupError {
            throw ValidationError(e.description)
        }
        let host = self.host
        let done = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        Task {
            do {
                try await server.run { port in
                    FileHandle.standardError.write(Data("lumen: serving \(server.modelNames.joined(separator: ", ")) on http://\(host):\(port)/\n".utf8))
                }
            } catch {
                failure.error = error
            }
            done.signal()
        }
        done.wait()
        if let error = failure.error { throw error }
    }
}

private final class FailureBox: @unchecked Sendable {
    var error: Error?
}

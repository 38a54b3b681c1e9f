import ArgumentParser
import Foundation
import Lumen
import LumenEval

/// `lumen eval`: prompt adherence of a shapes-world model (the built-in demo model by default) on
/// its held-out prompts, scored by counting pixels (docs/quality.md).
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score prompt adherence of a shapes-world model (default: the built-in demo model) on held-out prompts.",
        discussion: """
            Generates each prompt of the set with its own seed, parses each image by counting pixels \
            (background colour, shape colours, kinds, sizes and positions) and prints how many of the \
            attributes the captions state were drawn, and the R-precision (does each image match its own \
            caption better than every other caption of the set). tools/eval_adherence.py computes the same \
            figures for diffusers on the same weights and seeds.
            """)

    @Option(help: "A diffusers folder of a shapes-world model (default: the built-in demo model).")
    var model: String?

    @Option(help: "The prompt set: index<TAB>seed<TAB>caption lines (default: MODEL/\(ShapesEvaluation.promptFileName)).")
    var prompts: String?

    @Option(help: "Score this many prompts, spread over the set (default: all).")
    var limit: Int?

    @Option(help: "Denoising steps.")
    var steps = 20

    @Option(help: "Classifier-free guidance scale.")
    var guidance: Float = 4

    @Option(help: ArgumentHelp(SchedulerKind.argumentHelp))
    var scheduler: SchedulerKind?

    @Option(help: "auto, cpu or vulkan.")
    var backend = BackendArgument.cpu

    @Option(help: "Vulkan device index (`lumen devices` lists them).")
    var device: Int?

    @Option(help: "Write the images here as NNNN.png (NNNN: the prompt's index).")
    var save: String?

    @Option(name: .customLong("score-dir"),
            help: "Score the NNNN.png images of this folder (e.g. made by diffusers) instead of generating.")
    var scoreDir: String?

    @Option(help: "Write the figures as JSON to this file.")
    var json: String?

    func validate() throws {
        try backend.validate(device: device)
        if let limit, limit < 1 { throw ValidationError("--limit \(limit): expected at least 1") }
        if steps < 1 { throw ValidationError("--steps \(steps): expected at least 1") }
        var isDir: ObjCBool = false
        if let save, FileManager.default.fileExists(atPath: save, isDirectory: &isDir), !isDir.boolValue {
            throw ValidationError("--save \(save): a file of that name exists; --save takes a folder for the NNNN.png images")
        }
        try EnvironmentCheck.validate()
    }

    func run() throws {
        AtomicFile.removeTemporariesOnSignals()
        if let json { try AtomicFile.checkWritable(json) }  // before the model loads, not after the last image
        let modelPath: String
        if let model {
            modelPath = model
        } else {
            guard let builtIn = DefaultModel.locate() else {
                throw ValidationError("no --model given and the built-in demo model was not found; pass --model PATH")
            }
            modelPath = builtIn.path
        }
        let promptFile = prompts ?? (modelPath as NSString).appendingPathComponent(ShapesEvaluation.promptFileName)
        let all = try ShapesWorld.readPrompts(promptFile)
        let items = ShapesEvaluation.spread(all, limit: limit)
        let started = Date()
        var images: [RGBImage] = []
        var scored: [ShapesWorld.Prompt] = []
        let name: String
        if let scoreDir {
            for p in items {
                let path = (scoreDir as NSString).appendingPathComponent(String(format: "%04d.png", p.index))
                guard FileManager.default.fileExists(atPath: path) else { continue }
                images.append(try RGBImage.readPNG(path).image)
                scored.append(p)
            }
            if scored.count < items.count {
                FileHandle.standardError.write(Data("lumen: \(scoreDir): \(items.count - scored.count) of \(items.count) images missing, scored without them\n".utf8))
            }
            guard !scored.isEmpty else { throw ValidationError("--score-dir \(scoreDir): none of the prompts' NNNN.png images is there") }
            name = (scoreDir as NSString).lastPathComponent
        } else {
            let pipeline = try Pipeline(modelPath: modelPath, backend: backend.backend(device: device))
            if let note = pipeline.backendNote { FileHandle.standardError.write(Data("lumen: \(note)\n".utf8)) }
            if let save { try FileManager.default.createDirectory(atPath: save, withIntermediateDirectories: true) }
            let progress = ProgressBar()
            images = try ShapesEvaluation.generate(pipeline, prompts: items, steps: steps, guidance: guidance, scheduler: scheduler) { i, p, image in
                if let save {
                    try image.writePNG(to: (save as NSString).appendingPathComponent(String(format: "%04d.png", p.index)),
                                       text: [("parameters", "\(p.caption)\nSteps: \(steps), CFG scale: \(guidance), Seed: \(p.seed)")])
                }
                progress.update(i + 1, of: items.count)
            }
            progress.finish()
            scored = items
            let sched = scheduler ?? pipeline.schedulerKind(for: GenerationRequest(prompt: ""))
            name = "lumen \(pipeline.executor.backendName) \(sched.rawValue) \(steps)st cfg\(guidance)"
        }
        let report = try ShapesAdherence.score(images: images, captions: scored.map(\.caption), pool: all.map(\.caption))
        print("held-out prompts: \(scored.count) of \(all.count) (\(promptFile)); R-precision against every other caption of the set (chance ~\(String(format: "%.1f", 100 / Double(all.count))) %)")
        print(ShapesAdherence.table([(name, report)]))
        FileHandle.standardError.write(Data(String(format: "lumen: %.1f s\n", Date().timeIntervalSince(started)).utf8))
        if let json {
            struct Figures: Encodable {
                let model, prompts, row: String
                let n, steps: Int
                let guidance: Float
                let figures: [String: Double]
            }
            var figures = report.groups
            figures["overall"] = report.overall
            figures["r_precision"] = report.rPrecision
            let out = Figures(model: modelPath, prompts: promptFile, row: name, n: report.count, steps: steps,
                              guidance: guidance, figures: figures)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(out), to: json)
        }
    }
}

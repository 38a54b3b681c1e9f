import Foundation
import PackagePlugin

/// Compiles every `Shaders/*.comp` to SPIR-V with glslangValidator (twice: f32 activations, and
/// f16 activations as `NAME_f16`) and embeds the modules into
/// the target as Swift `[UInt32]` arrays, so the binary carries its kernels (no resource lookup,
/// no committed SPIR-V, no manual step).
///
/// glslangValidator is found at `/usr/bin/glslangValidator` unless `LUMEN_GLSLANG` names another
/// one (`context.tool(named:)` does not search PATH).
@main
struct ShaderPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let shaders = context.package.directoryURL.appending(path: "Shaders")
        let files = (try? FileManager.default.contentsOfDirectory(at: shaders, includingPropertiesForKeys: nil)) ?? []
        let sources = files.filter { $0.pathExtension == "comp" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
        // Included files: an edit to any of them rebuilds every module.
        let includes = files.filter { $0.pathExtension == "glsl" }
        let glslang = URL(fileURLWithPath: ProcessInfo.processInfo.environment["LUMEN_GLSLANG"] ?? "/usr/bin/glslangValidator")
        let embed = try context.tool(named: "SPIRVEmbed").url
        let out = context.pluginWorkDirectoryURL

        var commands: [Command] = []
        var names: [String] = []
        for source in sources {
            let base = source.deletingPathExtension().lastPathComponent
            // Each kernel twice: f32 activations, and f16 activations (ACT_F16, see act.glsl).
            for (name, defines) in [(base, [String]()), (base + "_f16", ["-DACT_F16=1"])] {
                names.append(name)
                let spv = out.appending(path: "\(name).spv")
                let swift = out.appending(path: "SPIRV_\(name).swift")
                commands.append(.buildCommand(
                    displayName: "glslangValidator \(name)",
                    executable: glslang,
                    arguments: ["-V", "--target-env", "vulkan1.1", "-I\(shaders.path)"] + defines + ["-o", spv.path, source.path],
                    inputFiles: [source] + includes,
                    outputFiles: [spv]))
                commands.append(.buildCommand(
                    displayName: "Embedding \(name).spv",
                    executable: embed,
                    arguments: ["module", name, spv.path, swift.path],
                    inputFiles: [spv],
                    outputFiles: [swift]))
            }
        }
        let index = out.appending(path: "SPIRV_index.swift")
        commands.append(.buildCommand(
            displayName: "Indexing SPIR-V modules",
            executable: embed,
            arguments: ["index", index.path] + names,
            inputFiles: sources,
            outputFiles: [index]))
        return commands
    }
}

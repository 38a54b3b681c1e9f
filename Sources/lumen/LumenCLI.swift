import ArgumentParser
import Lumen
import LumenBenchmarks

@main
struct LumenCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lumen",
        abstract: "Lumen: a text-to-image diffusion engine for Linux.",
        version: Lumen.version,
        subcommands: [GenerateCommand.self, EvalCommand.self, KernelBenchCommand.self, InfoCommand.self, DevicesCommand.self])
}

import ArgumentParser
import Foundation
import Lumen
import LumenBenchmarks

@main
struct LumenCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lumen",
        abstract: "Lumen: a text-to-image diffusion engine for Linux.",
        version: Lumen.version,
        subcommands: [GenerateCommand.self, ServeCommand.self, EvalCommand.self, KernelBenchCommand.self, InfoCommand.self, DevicesCommand.self])

    /// Started under the name `lumen-bench` (a link to this binary, as tools/gpu-check.sh packs it),
    /// `lumen` is `lumen-bench`: one static binary carries both commands.
    static func main() {
        let name = URL(fileURLWithPath: CommandLine.arguments.first ?? "lumen").lastPathComponent
        if name == "lumen-bench" {
            LumenBenchCommand.main(nil)
        } else {
            main(nil)  // ParsableCommand.main(_:), which parses the arguments
        }
    }
}

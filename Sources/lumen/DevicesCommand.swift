import ArgumentParser
import Foundation
import Lumen

/// `lumen devices`: the executors this machine can run, with what they offer.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List the devices Lumen can run on.")

    func run() throws {
        let cpu = CPUExecutor()
        print("cpu: \(ProcessInfo.processInfo.activeProcessorCount) cores, threads \(cpu.pool.threads), "
              + "instruction set \(CPUExecutor.instructionSet) (best available: \(CPUExecutor.detectedInstructionSet))")
        print("vulkan: not built into this version")
    }
}

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
        do {
            let devices = try VulkanExecutor.devices()
            let chosen = try? VulkanExecutor.defaultDeviceIndex()
            for d in devices { print(d.description + (d.index == chosen ? " [default]" : "")) }
        } catch {
            print("vulkan: no device (\(error)); the CPU executor is used")
        }
    }
}

import ArgumentParser
import Foundation
import Lumen

/// `lumen devices`: the executors this machine can run, with what they offer.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List the devices Lumen can run on.")

    @Flag(name: .shortAndLong, help: "Also print each Vulkan device's extensions (cooperative matrices, subgroup size control), compute limits and the cooperative-matrix shapes it offers.")
    var verbose = false

    func run() throws {
        let cpu = CPUExecutor()
        let topology = CPUTopology.current
        let quota = topology.cpuQuota.map { String(format: ", CPU quota %.2f", $0) } ?? ""
        func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }
        // The cores and logical CPUs this process may run on (its affinity mask), which with the
        // quota make the default thread count.
        // On a hybrid CPU, how many of those cores are of the slower kind, and the products' split.
        let hybrid = topology.hybrid ? ", \(topology.efficiencyCores) of them efficiency cores" : ""
        let split = cpu.pool.tasksPerThread > 1 ? " (\(cpu.pool.tasksPerThread) tasks each)" : ""
        print("cpu: \(count(topology.cores, "core")) (\(count(topology.logicalCPUs, "logical CPU"))\(hybrid)\(quota)), threads \(cpu.pool.threads)\(split), "
              + "instruction set \(CPUExecutor.instructionSet) (best available: \(CPUExecutor.detectedInstructionSet)), "
              + "L2 \(CPUExecutor.l2CacheBytes / 1024) KiB per core, bf16 \(CPUExecutor.bf16Supported ? "yes" : "no")")
        do {
            let devices = try VulkanExecutor.devices()
            let chosen = try? VulkanExecutor.defaultDeviceIndex()
            if verbose {
                for d in try VulkanExecutor.deviceDetails() {
                    var lines = d.lines
                    if d.info.index == chosen { lines[0] += " [default]" }
                    if d.info.index == chosen, let executor = try? VulkanExecutor(device: d.info.index) {
                        // Runs the tensor-core kernels' check where the device has them.
                        lines.insert("  tensor cores: \(executor.checkTensorCoresNow())", at: 1)
                        lines.insert("  default activations: \(executor.options.activations.rawValue)", at: 2)
                    }
                    lines.forEach { print($0) }
                }
            } else {
                for d in devices { print(d.description + (d.index == chosen ? " [default]" : "")) }
            }
        } catch {
            print("vulkan: no device (\(error)); the CPU executor is used")
        }
    }
}

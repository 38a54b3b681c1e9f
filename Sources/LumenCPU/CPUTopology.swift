import CLumenCPU
import Foundation

/// What the default thread count is made of: the CPUs this process may run on (its affinity
/// mask), the physical cores among them, and the CPU time its control group may use.
///
/// Foundation's `activeProcessorCount` counts every online logical CPU: a process under
/// `taskset`, in a container with a cpuset or a CPU quota, ran one thread per CPU of the whole
/// host, time-sliced onto the few it had (8 threads on one CPU: the SD 1.5 UNet step at 256 took
/// 1.91–1.94 s against 1.71–1.74 s with one thread). On CPUs with simultaneous multithreading the
/// two threads of a core share its FMA units, L1 and L2, which the GEMM and attention blocking
/// size for one thread, so the default is one thread per physical core, as PyTorch's and
/// llama.cpp's defaults are. `--threads` and `LUMEN_THREADS` still set any count.
public struct CPUTopology: Sendable, Equatable {
    /// The logical CPUs this process may run on.
    public var logicalCPUs: Int
    /// The physical cores among them (a core counts once whichever of its threads are allowed).
    public var cores: Int
    /// The CPU time the process's control group may use, in CPUs (cgroup v2 `cpu.max`, v1
    /// `cpu.cfs_quota_us / cpu.cfs_period_us`, the smallest along the group's path); nil: no limit.
    public var cpuQuota: Double?
    /// The logical CPUs among those this process may run on that are a hybrid CPU's efficiency
    /// cores (Intel's since Alder Lake: Linux lists them in `/sys/devices/cpu_atom/cpus`, the
    /// performance cores in `/sys/devices/cpu_core/cpus`); 0 elsewhere.
    public var efficiencyCPUs: Int = 0

    /// Performance and efficiency cores both among the CPUs this process may run on. An
    /// efficiency core does about half a performance core's AVX2 work per cycle (two 128-bit FMA
    /// units against two 256-bit ones) at a lower clock, so equal shares of a product wait for
    /// the efficiency cores: the products are then split into more tasks than threads
    /// (`ThreadPool.tasksPerThread`). Not measured on such a CPU (none here).
    public var hybrid: Bool { efficiencyCPUs > 0 && efficiencyCPUs < logicalCPUs }

    /// One thread per core, no more than the quota allows (rounded up: 1.5 CPUs of quota get 2
    /// threads, which together use it all), at least one.
    public var defaultThreads: Int {
        var n = cores
        if let q = cpuQuota, q > 0 { n = min(n, Int(q.rounded(.up))) }
        return max(1, n)
    }

    /// This machine's, read once.
    public static let current = CPUTopology.detect()

    /// Reads the affinity mask, `/sys/devices/system/cpu/cpuN/topology` and the control group's
    /// limits under `root` (tests pass a folder laid out like `/`; `cpus` replaces the affinity mask).
    public static func detect(root: String = "/", cpus given: [Int]? = nil) -> CPUTopology {
        let cpus = given ?? affinity() ?? Array(0..<max(1, ProcessInfo.processInfo.activeProcessorCount))
        let base = root.hasSuffix("/") ? String(root.dropLast()) : root
        // A core is named by the list of its threads' CPU ids (the same list for each of them).
        var coreKeys = Set<String>()
        var unknown = 0
        for cpu in cpus {
            let dir = "\(base)/sys/devices/system/cpu/cpu\(cpu)/topology/"
            if let key = readTrimmed(dir + "core_cpus_list") ?? readTrimmed(dir + "thread_siblings_list"), !key.isEmpty {
                coreKeys.insert(key)
            } else {
                unknown += 1  // no topology (a masked /sys): counts as a core of its own
            }
        }
        // Both lists present: a hybrid CPU (either alone is an ordinary one)
        var efficiency = 0
        if let atom = readTrimmed(base + "/sys/devices/cpu_atom/cpus").flatMap(parseCPUList),
           let core = readTrimmed(base + "/sys/devices/cpu_core/cpus").flatMap(parseCPUList), !core.isEmpty {
            efficiency = cpus.filter(atom.contains).count
        }
        return CPUTopology(logicalCPUs: max(1, cpus.count), cores: max(1, coreKeys.count + unknown),
                           cpuQuota: cgroupQuota(base), efficiencyCPUs: efficiency)
    }

    /// A kernel CPU list ("0-3,8,10-11"); nil where it is not one.
    static func parseCPUList(_ s: String) -> Set<Int>? {
        var ids = Set<Int>()
        for part in s.split(separator: ",") {
            let ends = part.split(separator: "-", omittingEmptySubsequences: false)
            guard let lo = ends.first.flatMap({ Int($0) }), let hi = ends.count == 2 ? Int(ends[1]) : lo,
                  ends.count <= 2, lo >= 0, hi >= lo, hi - lo < 65536 else { return nil }
            ids.formUnion(lo...hi)
        }
        return ids
    }

    static func affinity() -> [Int]? {
        let n = lumen_cpu_affinity(nil, 0)
        guard n > 0 else { return nil }
        var ids = [Int32](repeating: 0, count: Int(n))
        let m = ids.withUnsafeMutableBufferPointer { lumen_cpu_affinity($0.baseAddress, n) }
        return m == n ? ids.map(Int.init) : nil
    }

    /// The smallest CPU quota along the process's control-group path (v2, then v1's cpu
    /// controller), its ancestors included; in a container the group's own files sit at the
    /// mount's root, which the walk reaches last.
    static func cgroupQuota(_ base: String) -> Double? {
        guard let text = try? String(contentsOfFile: base + "/proc/self/cgroup", encoding: .utf8) else { return nil }
        var best: Double?
        func consider(_ q: Double?) {
            if let q, q > 0 { best = min(best ?? q, q) }
        }
        for line in text.split(separator: "\n") {
            // hierarchy-ID:controllers:path
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let controllers = parts[1].split(separator: ","), path = String(parts[2])
            if parts[0] == "0" && controllers.isEmpty {
                for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    for dir in ancestors(base + mount, path) {
                        consider(readTrimmed(dir + "/cpu.max").flatMap(parseCPUMax))
                    }
                }
            } else if controllers.contains("cpu") {
                for mount in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"] {
                    for dir in ancestors(base + mount, path) {
                        guard let quota = readTrimmed(dir + "/cpu.cfs_quota_us").flatMap(Double.init),
                              let period = readTrimmed(dir + "/cpu.cfs_period_us").flatMap(Double.init),
                              quota > 0, period > 0 else { continue }
                        consider(quota / period)
                    }
                }
            }
        }
        return best
    }

    /// `cpu.max`: "max 100000" (no limit) or "QUOTA PERIOD" in microseconds.
    static func parseCPUMax(_ s: String) -> Double? {
        let f = s.split(separator: " ")
        guard f.count == 2, let quota = Double(f[0]), let period = Double(f[1]), quota > 0, period > 0 else { return nil }
        return quota / period
    }

    /// mount + path, then each parent up to mount itself.
    static func ancestors(_ mount: String, _ path: String) -> [String] {
        var comps = path.split(separator: "/").map(String.init)
        var dirs: [String] = []
        while true {
            dirs.append(([mount] + comps).joined(separator: "/"))
            if comps.isEmpty { break }
            comps.removeLast()
        }
        return dirs
    }

    static func readTrimmed(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

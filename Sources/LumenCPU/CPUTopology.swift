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
    /// The physical cores among them that are a hybrid CPU's slower kind; 0 where all are alike.
    /// Linux names them in one of three ways, read in this order:
    /// - Intel's efficiency cores (since Alder Lake): `/sys/devices/cpu_atom/cpus`, with the
    ///   performance cores in `/sys/devices/cpu_core/cpus`;
    /// - ARM's big.LITTLE: each CPU's `cpu_capacity` (1024 for the fastest);
    /// - cores whose `cpufreq/cpuinfo_max_freq` differ (AMD's Zen 5 with Zen 5c cores, and the
    ///   above again).
    /// A core counts as slower where its capacity or clock is below 4/5 of the fastest allowed
    /// CPU's: the few per cent between an ordinary CPU's favoured and other cores never count.
    public var efficiencyCores: Int = 0

    /// Fast and slow cores both among the CPUs this process may run on. An Intel efficiency core
    /// does about half a performance core's AVX2 work per cycle (two 128-bit FMA units against
    /// two 256-bit ones) at a lower clock, a Zen 5c core about two thirds of a Zen 5's (its
    /// clock), so equal shares of a product wait for the slow cores: the products are then split
    /// into more tasks than threads (`ThreadPool.tasksPerThread`). Not measured on such a CPU
    /// (none here).
    public var hybrid: Bool { efficiencyCores > 0 && efficiencyCores < cores }

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
        // A core is named by the list of its threads' CPU ids (the same list for each of them);
        // a CPU without a topology (a masked /sys) counts as a core of its own.
        func coreKey(_ cpu: Int) -> String {
            let dir = "\(base)/sys/devices/system/cpu/cpu\(cpu)/topology/"
            if let key = readTrimmed(dir + "core_cpus_list") ?? readTrimmed(dir + "thread_siblings_list"), !key.isEmpty {
                return key
            }
            return "cpu \(cpu)"
        }
        let cores = Set(cpus.map(coreKey)).count
        let slower = slowerCPUs(base, cpus)
        return CPUTopology(logicalCPUs: max(1, cpus.count), cores: max(1, cores), cpuQuota: cgroupQuota(base),
                           efficiencyCores: Set(slower.map(coreKey)).count)
    }

    /// The CPUs among `cpus` of a hybrid CPU's slower kind (see `efficiencyCores`); empty where
    /// all are alike or nothing tells.
    static func slowerCPUs(_ base: String, _ cpus: [Int]) -> [Int] {
        if let atom = readTrimmed(base + "/sys/devices/cpu_atom/cpus").flatMap(parseCPUList),
           let core = readTrimmed(base + "/sys/devices/cpu_core/cpus").flatMap(parseCPUList), !core.isEmpty {
            return cpus.filter(atom.contains)
        }
        // A per-CPU figure, read for every allowed CPU (a CPU without it: nothing is concluded).
        for file in ["cpu_capacity", "cpufreq/cpuinfo_max_freq"] {
            let values = cpus.map { readTrimmed("\(base)/sys/devices/system/cpu/cpu\($0)/\(file)").flatMap(Double.init) }
            guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { continue }
            let fastest = values.map { $0! }.max()!
            return zip(cpus, values).filter { $0.1! < 0.8 * fastest }.map(\.0)
        }
        return []
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

import CLumenCPU
import Foundation
import LumenCPU
import XCTest

/// The default thread count's inputs, read from folders laid out like `/` (sysfs topology,
/// /proc/self/cgroup, cgroup v1 and v2 files), and from this machine.
final class CPUTopologyTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "lumen-topology-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root)
    }

    func write(_ path: String, _ text: String) throws {
        let url = URL(fileURLWithPath: root + path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try (text + "\n").write(to: url, atomically: true, encoding: .utf8)
    }

    /// 8 logical CPUs, two threads per core numbered as Intel and Linux do (cpu i and i + 4).
    func writeSMT(file: String = "core_cpus_list") throws {
        for cpu in 0..<8 {
            let core = cpu % 4
            try write("/sys/devices/system/cpu/cpu\(cpu)/topology/\(file)", "\(core),\(core + 4)")
        }
    }

    func testOneThreadPerPhysicalCore() throws {
        try writeSMT()
        let all = CPUTopology.detect(root: root, cpus: Array(0..<8))
        XCTAssertEqual(all.logicalCPUs, 8)
        XCTAssertEqual(all.cores, 4)
        XCTAssertNil(all.cpuQuota)
        XCTAssertEqual(all.defaultThreads, 4)
        // An affinity mask with both threads of one core, or one thread of each of two cores.
        XCTAssertEqual(CPUTopology.detect(root: root, cpus: [1, 5]).defaultThreads, 1)
        XCTAssertEqual(CPUTopology.detect(root: root, cpus: [0, 1]).defaultThreads, 2)
        XCTAssertEqual(CPUTopology.detect(root: root, cpus: [0, 1, 4]).cores, 2)
    }

    func testOlderKernelsSiblingList() throws {
        try writeSMT(file: "thread_siblings_list")
        XCTAssertEqual(CPUTopology.detect(root: root, cpus: Array(0..<8)).cores, 4)
    }

    /// No topology under /sys (some containers mask it): every allowed CPU counts as a core.
    func testWithoutTopology() throws {
        let t = CPUTopology.detect(root: root, cpus: [0, 2, 3])
        XCTAssertEqual(t.cores, 3)
        XCTAssertEqual(t.defaultThreads, 3)
    }

    /// cgroup v2: the smallest `cpu.max` along the group's path, rounded up to whole threads.
    func testCgroupV2Quota() throws {
        try writeSMT()
        try write("/proc/self/cgroup", "0::/system.slice/lumen.service")
        try write("/sys/fs/cgroup/cpu.max", "max 100000")
        try write("/sys/fs/cgroup/system.slice/cpu.max", "300000 100000")
        try write("/sys/fs/cgroup/system.slice/lumen.service/cpu.max", "150000 100000")
        var t = CPUTopology.detect(root: root, cpus: Array(0..<8))
        XCTAssertEqual(try XCTUnwrap(t.cpuQuota), 1.5, accuracy: 1e-9)
        XCTAssertEqual(t.defaultThreads, 2)
        // A parent's limit binds the child too.
        try write("/sys/fs/cgroup/system.slice/cpu.max", "50000 100000")
        t = CPUTopology.detect(root: root, cpus: Array(0..<8))
        XCTAssertEqual(try XCTUnwrap(t.cpuQuota), 0.5, accuracy: 1e-9)
        XCTAssertEqual(t.defaultThreads, 1)
        // A quota above the cores leaves the cores.
        try write("/sys/fs/cgroup/system.slice/cpu.max", "max 100000")
        try write("/sys/fs/cgroup/system.slice/lumen.service/cpu.max", "1600000 100000")
        XCTAssertEqual(CPUTopology.detect(root: root, cpus: Array(0..<8)).defaultThreads, 4)
    }

    /// In a container the group's files sit at the mount's root while /proc/self/cgroup names
    /// the host's path (cgroup v1 without a cgroup namespace); -1 is no limit.
    func testCgroupV1QuotaInAContainer() throws {
        try write("/proc/self/cgroup", "5:cpu,cpuacct:/docker/0123abcd\n4:memory:/docker/0123abcd")
        try write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000")
        try write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000")
        let t = CPUTopology.detect(root: root, cpus: Array(0..<16))
        XCTAssertEqual(try XCTUnwrap(t.cpuQuota), 2.5, accuracy: 1e-9)
        XCTAssertEqual(t.defaultThreads, 3)
        try write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1")
        XCTAssertNil(CPUTopology.detect(root: root, cpus: Array(0..<16)).cpuQuota)
        XCTAssertEqual(CPUTopology.detect(root: root, cpus: Array(0..<16)).defaultThreads, 16)
    }

    /// An Alder Lake-like hybrid CPU: 8 performance cores with two threads each (cpu 2k and
    /// 2k + 1) and 8 efficiency cores (cpu 16-23), listed under /sys/devices/cpu_core and cpu_atom.
    func testHybridCPU() throws {
        for cpu in 0..<16 {
            try write("/sys/devices/system/cpu/cpu\(cpu)/topology/core_cpus_list", "\(cpu / 2 * 2)-\(cpu / 2 * 2 + 1)")
        }
        for cpu in 16..<24 { try write("/sys/devices/system/cpu/cpu\(cpu)/topology/core_cpus_list", "\(cpu)") }
        try write("/sys/devices/cpu_core/cpus", "0-15")
        try write("/sys/devices/cpu_atom/cpus", "16-23")
        let all = CPUTopology.detect(root: root, cpus: Array(0..<24))
        XCTAssertEqual(all.cores, 16)
        XCTAssertEqual(all.efficiencyCores, 8)
        XCTAssertTrue(all.hybrid)
        XCTAssertEqual(all.defaultThreads, 16)
        // Pinned to one kind of core: an ordinary CPU for this process.
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: Array(0..<16)).hybrid)
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: Array(16..<24)).hybrid)
        XCTAssertTrue(CPUTopology.detect(root: root, cpus: [0, 1, 20]).hybrid)
        // A malformed list, or only one of the two: not hybrid.
        try write("/sys/devices/cpu_atom/cpus", "16-x")
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: Array(0..<24)).hybrid)
        try FileManager.default.removeItem(atPath: root + "/sys/devices/cpu_core")
        try write("/sys/devices/cpu_atom/cpus", "16-23")
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: Array(0..<24)).hybrid)
    }

    /// Slower cores told by their clocks (AMD's Zen 5 with Zen 5c: 4 cores to 5.1 GHz and 8 to
    /// 3.3, two threads each) or by ARM's capacities; an ordinary CPU's favoured cores are not.
    func testHybridByClockOrCapacity() throws {
        for cpu in 0..<24 {
            try write("/sys/devices/system/cpu/cpu\(cpu)/topology/core_cpus_list", "\(core(cpu)),\(core(cpu) + 12)")
            try write("/sys/devices/system/cpu/cpu\(cpu)/cpufreq/cpuinfo_max_freq", core(cpu) < 4 ? "5100000" : "3300000")
        }
        let zen = CPUTopology.detect(root: root, cpus: Array(0..<24))
        XCTAssertEqual(zen.cores, 12)
        XCTAssertEqual(zen.efficiencyCores, 8)
        XCTAssertTrue(zen.hybrid)
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: [4, 5, 16]).hybrid)
        // A CPU whose clock is not known: nothing is concluded.
        try FileManager.default.removeItem(atPath: root + "/sys/devices/system/cpu/cpu23/cpufreq")
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: Array(0..<24)).hybrid)
        XCTAssertTrue(CPUTopology.detect(root: root, cpus: Array(0..<23)).hybrid)
        // Favoured cores a few per cent faster than the rest.
        for cpu in 0..<24 {
            try write("/sys/devices/system/cpu/cpu\(cpu)/cpufreq/cpuinfo_max_freq", core(cpu) < 2 ? "5050000" : "4850000")
        }
        XCTAssertFalse(CPUTopology.detect(root: root, cpus: Array(0..<24)).hybrid)
        // big.LITTLE: the capacities are read before the clocks.
        for cpu in 0..<24 {
            try write("/sys/devices/system/cpu/cpu\(cpu)/cpu_capacity", core(cpu) < 6 ? "1024" : "446")
        }
        let arm = CPUTopology.detect(root: root, cpus: Array(0..<24))
        XCTAssertEqual(arm.efficiencyCores, 6)
        XCTAssertTrue(arm.hybrid)
    }

    /// The core of `cpu` in that layout: threads cpu and cpu + 12 share one.
    private func core(_ cpu: Int) -> Int { cpu % 12 }

    /// This machine: the affinity mask is read (not every online CPU assumed), and the pool's
    /// default is the topology's.
    func testThisMachine() throws {
        let t = CPUTopology.current
        XCTAssertGreaterThanOrEqual(t.cores, 1)
        XCTAssertLessThanOrEqual(t.cores, t.logicalCPUs)
        XCTAssertLessThanOrEqual(t.logicalCPUs, ProcessInfo.processInfo.processorCount)
        let n = lumen_cpu_affinity(nil, 0)
        XCTAssertGreaterThan(n, 0, "sched_getaffinity")
        XCTAssertEqual(Int(n), t.logicalCPUs)
        if ProcessInfo.processInfo.environment["LUMEN_THREADS"] == nil {
            XCTAssertEqual(ThreadPool().threads, min(t.defaultThreads, ThreadPool.maxThreads))
        }
        XCTAssertEqual(ThreadPool(threads: 3).threads, 3)
    }
}

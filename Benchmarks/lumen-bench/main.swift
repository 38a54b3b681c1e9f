import LumenBenchmarks

// The kernel benchmarks as their own executable (the same as `lumen bench`).
KernelBenchCommand.main()

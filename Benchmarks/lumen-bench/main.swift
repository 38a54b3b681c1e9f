import LumenBenchmarks

// `lumen-bench [bench] …` runs the kernel benchmarks (as `lumen bench`); `lumen-bench model`
// the Stable Diffusion 1.5 phases.
LumenBenchCommand.main()

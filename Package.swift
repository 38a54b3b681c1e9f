// swift-tools-version: 6.0
import PackageDescription

// LUMEN_NO_DEMO_MODEL=1 at build time leaves the demo model (20 MB) out of the binary: a packed
// binary (tools/gpu-check.sh) then finds it through LUMEN_DEFAULT_MODEL or `lumen-default-model`
// beside the executable (DefaultModel.swift), and `lumen generate` without --model says so when
// there is none.
let embedDemoModel = (Context.environment["LUMEN_NO_DEMO_MODEL"] ?? "").isEmpty
// LUMEN_NO_ICU_DATA=1 (with --static-swift-stdlib) links an empty ICU data package in place of
// Foundation's 34 MB one (Sources/CLumenNoICUData): the packed GPU-check binary only.
let noICUData = !(Context.environment["LUMEN_NO_ICU_DATA"] ?? "").isEmpty

// Lumen: a text-to-image diffusion engine for Linux.
// Layers (see README.md): CLumenCPU (C kernels) -> LumenRuntime (tensors, graph) ->
// LumenCPU (CPU executor) -> Lumen (the engine) -> lumen (CLI).
let package = Package(
    name: "Lumen",
    products: [
        // The tensor runtime and CPU executor alone, for kernel work or other models.
        .library(name: "LumenRuntime", targets: ["LumenRuntime", "LumenCPU"]),
        // The full engine.
        .library(name: "Lumen", targets: ["Lumen"]),
        .executable(name: "lumen", targets: ["lumen"]),
        .executable(name: "lumen-bench", targets: ["lumen-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // `lumen serve` (Sources/LumenServer) and its tests.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.0.0"),
    ],
    targets: [
        .target(
            name: "CLumenCPU",
            path: "Sources/CLumenCPU",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("m"), .linkedLibrary("pthread")]
        ),
        // The registry of in-flight temporary files that the signal handlers remove: C, because a
        // handler may only make async-signal-safe calls.
        .target(name: "CLumenFiles", path: "Sources/CLumenFiles"),
        .target(name: "LumenRuntime", dependencies: ["CLumenFiles"], path: "Sources/LumenRuntime"),
        // libpng behind a C wrapper: its errors longjmp, which must never cross into Swift.
        .target(
            name: "CLumenPNG",
            path: "Sources/CLumenPNG",
            linkerSettings: [.linkedLibrary("png")]
        ),
        .target(
            name: "LumenCPU",
            dependencies: ["LumenRuntime", "CLumenCPU"],
            path: "Sources/LumenCPU"
        ),
        // Vulkan: the loader is opened with dlopen at run time (libvulkan is never linked), and the
        // kernels in Shaders/ are compiled to SPIR-V and embedded by ShaderPlugin during the build.
        .target(
            name: "CVulkan",
            path: "Sources/CVulkan",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        .target(
            name: "LumenVulkan",
            dependencies: ["LumenRuntime", "CVulkan"],
            path: "Sources/LumenVulkan",
            plugins: ["ShaderPlugin"]
        ),
        .executableTarget(name: "SPIRVEmbed", path: "Plugins/SPIRVEmbed"),
        .plugin(name: "ShaderPlugin", capability: .buildTool(), dependencies: ["SPIRVEmbed"], path: "Plugins/ShaderPlugin"),
        // The demo model (Models/demo) built into the binary with .incbin: the assembler finds the
        // files through this header search path.
        .target(
            name: "CLumenDemoModel",
            path: "Sources/CLumenDemoModel",
            cSettings: [.headerSearchPath("../../Models/demo")] + (embedDemoModel ? [] : [.define("LUMEN_NO_DEMO_MODEL")])
        ),
        .target(
            name: "Lumen",
            dependencies: [
                "LumenRuntime", "LumenCPU", "CLumenPNG", "LumenVulkan", "CLumenDemoModel",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Lumen"
        ),
        // The shapes-world evaluation: it belongs to the demo model, not to the engine core.
        .target(name: "LumenEval", dependencies: ["Lumen"], path: "Sources/LumenEval"),
        .target(
            name: "LumenBenchmarks",
            dependencies: [
                "Lumen", "LumenRuntime", "LumenCPU", "CLumenCPU",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/LumenBenchmarks"
        ),
        .target(name: "CLumenNoICUData", path: "Sources/CLumenNoICUData"),
        // `lumen serve`: the OpenAI images API and AUTOMATIC1111's API over HTTP (Hummingbird 2).
        .target(
            name: "LumenServer",
            dependencies: [
                "Lumen",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/LumenServer"
        ),
        .executableTarget(
            name: "lumen",
            dependencies: [
                "Lumen", "LumenEval", "LumenBenchmarks", "LumenServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ] + (noICUData ? ["CLumenNoICUData"] : []),
            path: "Sources/lumen"
        ),
        .executableTarget(
            name: "lumen-bench",
            dependencies: [
                "LumenBenchmarks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/lumen-bench"
        ),
        // Helpers every test target shares (seeded random values, the instruction sets to test).
        .target(name: "LumenTestSupport", dependencies: ["LumenCPU"], path: "Tests/LumenTestSupport"),
        .testTarget(name: "LumenRuntimeTests", dependencies: ["LumenRuntime", "LumenTestSupport"]),
        .testTarget(name: "LumenCPUTests", dependencies: ["LumenRuntime", "LumenCPU", "CLumenCPU", "LumenTestSupport"]),
        .testTarget(name: "LumenTests", dependencies: ["Lumen", "LumenEval", "LumenTestSupport"]),
        .testTarget(
            name: "LumenServerTests",
            dependencies: [
                "LumenServer", "Lumen", "LumenTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(name: "LumenVulkanTests", dependencies: ["LumenRuntime", "LumenCPU", "LumenVulkan", "LumenTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)

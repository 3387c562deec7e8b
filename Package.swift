// swift-tools-version: 6.0
// pmq — mixed-precision compression of Mixture-of-Experts models (MC-MoE / MC# recipe).
// Module direction is one-way: pmq (CLI) → engines (PMQSolver, ExpertProfiler, QuantEngine) → core.
import PackageDescription

/// Kernels are compiled for Haswell (AVX2 + FMA, x86-64-v3): without a target CPU, SIMD `addProduct`
/// becomes a libm `fmaf` call per lane (shared/DESIGN.md §6). The binary needs such a CPU
/// (Intel Haswell / AMD Zen or newer) on x86-64; other architectures use their defaults.
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "haswell"], .when(platforms: [.linux])),
]

let package = Package(
    name: "pmq",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "pmq", targets: ["pmq"]),
        .library(name: "PMQSolver", targets: ["PMQSolver"]),
        .library(name: "QuantEngine", targets: ["QuantEngine"]),
        .library(name: "ExpertProfiler", targets: ["ExpertProfiler"]),
        .library(name: "ModelFormat", targets: ["ModelFormat"]),
        .library(name: "MoERuntime", targets: ["MoERuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // COIN-OR CBC's C API (Cbc_C_Interface.h), found through pkg-config.
        .systemLibrary(
            name: "CCbc",
            pkgConfig: "cbc",
            providers: [.apt(["coinor-libcbc-dev"]), .brew(["cbc"])]
        ),
        // Core file handling: safetensors, config.json, tokenizers, token files, atomic writes.
        .target(name: "ModelFormat"),
        // Quantizers, GPTQ kernels, bit packing and the packed-checkpoint writer.
        .target(name: "QuantEngine", dependencies: ["ModelFormat"], swiftSettings: kernelSettings),
        // Calibration runs: profiles, and the layer-by-layer quantization of a whole model.
        .target(name: "ExpertProfiler", dependencies: ["QuantEngine", "ModelFormat", "MoERuntime"], swiftSettings: kernelSettings),
        // Model definition and forward pass: float and packed weights, expert pruning (ODP, OTP).
        .target(name: "MoERuntime", dependencies: ["ModelFormat", "QuantEngine"], swiftSettings: kernelSettings),
        // Profile → integer program → CBC → allocation report; Pareto sweeps.
        .target(name: "PMQSolver", dependencies: ["CCbc", "ModelFormat"]),
        .executableTarget(
            name: "pmq",
            dependencies: [
                "PMQSolver", "ExpertProfiler", "QuantEngine", "MoERuntime", "ModelFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "PMQSolverTests", dependencies: ["PMQSolver", "ModelFormat"]),
        .testTarget(name: "QuantEngineTests", dependencies: ["QuantEngine", "ExpertProfiler", "ModelFormat"]),
        .testTarget(name: "pmqTests", dependencies: ["pmq"]),
        .testTarget(name: "ModelFormatTests", dependencies: ["ModelFormat"]),
        .testTarget(name: "ExpertProfilerTests", dependencies: ["ExpertProfiler", "MoERuntime", "ModelFormat", "QuantEngine"],
                    path: "Tests/ExpertProfilerTests"),
        .testTarget(name: "MoERuntimeTests", dependencies: ["MoERuntime", "ModelFormat", "QuantEngine"]),
    ]
)

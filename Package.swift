// swift-tools-version: 6.0
// pmq — mixed-precision compression of Mixture-of-Experts models (MC-MoE / MC# recipe).
// One target per stage of the pipeline, profile → allocate → pack → run (+ pruning calibration),
// over two core targets. Dependencies point one way: pmq (CLI) → stages → core.
//
//   ModelFormat     core: every file format: safetensors, config.json, tokenizer, token files, packed GPTQ tensors
//   Kernels         core: the one parallel-for, BLAS-like float kernels, SGEMM, Cholesky, dequantizing kernels
//   KernelsAVX512   core: AVX-512 twins of Kernels' hottest loops, chosen at run time (CPUFeatures)
//   KernelsVNNI     core: int8 dot products on AVX-512 VNNI/VBMI, chosen at run time (CPUFeatures)
//   CPrefetch       core: one C header, software prefetches (Swift cannot emit one): AVX-512 bf16 decode, int8 prefill
//   Quantization    GPTQ and the group quantizers, Hessian accumulation: the numerics profile and pack share
//   MoERuntime      run: model weights, one file per architecture, forward pass, evaluation, pruning policies
//   Calibration     calibration windows through the model layer by layer; per-expert routing statistics, Hessians
//   ExpertProfiler  profile: routing statistics, GPTQ error per expert and width, layer sensitivity
//   PMQSolver       allocate: profile → integer program → CBC (through CCbc) → allocation report; sweeps
//   QuantEngine     pack: GPTQ of a whole model at the allocated widths → packed checkpoint
//   FrontEvaluation measured fronts: sweep points assembled from the quantization cache, scored on held-out tokens
//   Fuzzing         `pmq fuzz`: seeded mutations of every input format through the real readers
//   OTPTraining     pruning calibration: damage of each expert drop, OTP gate training, ODP calibration
//   Benchmarks      `pmq bench …`: figures for the solver, GPTQ, packed kernels and the runtime (never tests)
//   pmq             the command line: parses options, calls the stages, prints
import PackageDescription

/// Kernels are compiled for Haswell (AVX2 + FMA, x86-64-v3): without a target CPU, SIMD `addProduct`
/// becomes a libm `fmaf` call per lane (docs/KERNELS.md). The binary needs such a CPU
/// (Intel Haswell / AMD Zen or newer) on x86-64; other architectures use their defaults.
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "haswell"], .when(platforms: [.linux]))
]

/// The AVX-512 twins of the hottest kernels, called only when the CPU has AVX-512 (`CPUFeatures`).
let avx512Settings: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "skylake-avx512"], .when(platforms: [.linux]))
]

/// Integer dot-product kernels for AVX-512 VNNI and VBMI (Ice Lake and newer Xeons, Zen 4), called
/// only when the CPU has them (`CPUFeatures.vnni`).
let vnniSettings: [SwiftSetting] = [
    .unsafeFlags(
        ["-target-cpu", "skylake-avx512", "-Xcc", "-mavx512vnni", "-Xcc", "-mavx512vbmi"],
        .when(platforms: [.linux]))
]

let package = Package(
    name: "pmq",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "pmq", targets: ["pmq"]),
        .library(name: "ModelFormat", targets: ["ModelFormat"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Quantization", targets: ["Quantization"]),
        .library(name: "MoERuntime", targets: ["MoERuntime"]),
        .library(name: "Calibration", targets: ["Calibration"]),
        .library(name: "ExpertProfiler", targets: ["ExpertProfiler"]),
        .library(name: "PMQSolver", targets: ["PMQSolver"]),
        .library(name: "QuantEngine", targets: ["QuantEngine"]),
        .library(name: "OTPTraining", targets: ["OTPTraining"]),
        .library(name: "FrontEvaluation", targets: ["FrontEvaluation"]),
        .library(name: "Fuzzing", targets: ["Fuzzing"]),
        .library(name: "Benchmarks", targets: ["Benchmarks"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        // COIN-OR CBC's C API (Cbc_C_Interface.h), found through pkg-config.
        .systemLibrary(
            name: "CCbc",
            pkgConfig: "cbc",
            providers: [.apt(["coinor-libcbc-dev"]), .brew(["cbc"])]
        ),
        .target(name: "ModelFormat"),
        .target(name: "CPrefetch"),
        .target(name: "KernelsAVX512", dependencies: ["CPrefetch"], swiftSettings: avx512Settings),
        .target(name: "KernelsVNNI", swiftSettings: vnniSettings),
        .target(
            name: "Kernels", dependencies: ["CPrefetch", "KernelsAVX512", "KernelsVNNI", "ModelFormat"],
            swiftSettings: kernelSettings),
        .target(name: "Quantization", dependencies: ["Kernels", "ModelFormat"], swiftSettings: kernelSettings),
        .target(name: "MoERuntime", dependencies: ["Kernels", "ModelFormat"], swiftSettings: kernelSettings),
        .target(
            name: "Calibration",
            dependencies: ["MoERuntime", "Quantization", "Kernels", "ModelFormat"],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "ExpertProfiler",
            dependencies: ["Calibration", "MoERuntime", "Quantization", "Kernels", "ModelFormat"],
            swiftSettings: kernelSettings
        ),
        .target(name: "PMQSolver", dependencies: ["CCbc", "ModelFormat"]),
        .target(
            name: "QuantEngine",
            dependencies: ["Calibration", "MoERuntime", "Quantization", "Kernels", "ModelFormat"],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "FrontEvaluation",
            dependencies: ["QuantEngine", "PMQSolver", "MoERuntime", "Kernels", "ModelFormat"],
            swiftSettings: kernelSettings
        ),
        .target(name: "Fuzzing", dependencies: ["QuantEngine", "MoERuntime", "ModelFormat"]),
        .target(
            name: "OTPTraining",
            dependencies: ["Calibration", "MoERuntime", "Kernels", "ModelFormat"],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "Benchmarks",
            dependencies: ["ExpertProfiler", "PMQSolver", "MoERuntime", "Quantization", "Kernels", "ModelFormat"],
            swiftSettings: kernelSettings
        ),
        .executableTarget(
            name: "pmq",
            dependencies: [
                "Benchmarks", "PMQSolver", "ExpertProfiler", "QuantEngine", "FrontEvaluation", "Fuzzing", "OTPTraining",
                "Calibration",
                "MoERuntime", "Quantization", "Kernels", "ModelFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fixture paths and test-input generators shared by the test targets.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ModelFormatTests", dependencies: ["TestSupport", "ModelFormat"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "ModelFormat"]),
        .testTarget(
            name: "QuantizationTests", dependencies: ["TestSupport", "Quantization", "Kernels", "ModelFormat"]),
        .testTarget(name: "MoERuntimeTests", dependencies: ["TestSupport", "MoERuntime", "Kernels", "ModelFormat"]),
        .testTarget(
            name: "ExpertProfilerTests",
            dependencies: [
                "TestSupport", "ExpertProfiler", "Calibration", "MoERuntime", "Quantization", "Kernels", "ModelFormat",
            ]
        ),
        .testTarget(name: "PMQSolverTests", dependencies: ["PMQSolver", "ModelFormat"]),
        .testTarget(
            name: "QuantEngineTests",
            dependencies: [
                "TestSupport", "QuantEngine", "Calibration", "Quantization", "MoERuntime", "Kernels", "ModelFormat",
            ]
        ),
        .testTarget(
            name: "OTPTrainingTests",
            dependencies: ["TestSupport", "OTPTraining", "Calibration", "MoERuntime", "Kernels", "ModelFormat"]
        ),
        .testTarget(
            name: "FrontEvaluationTests",
            dependencies: ["TestSupport", "FrontEvaluation", "MoERuntime", "Kernels", "ModelFormat"]
        ),
        .testTarget(name: "FuzzingTests", dependencies: ["TestSupport", "Fuzzing"]),
        .testTarget(name: "pmqTests", dependencies: ["pmq"]),
    ]
)

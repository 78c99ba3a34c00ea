// swift-tools-version:6.0
// A Stable Diffusion runtime in Swift on the CPU. Layers, bottom up:
// CBLAS (+ CMalloc, CPrefetch) -> SDTensor -> SDModels -> SDPipeline (+ CPNG) -> sd / bench.
import Foundation
import PackageDescription

/// Element-wise kernels (softmax, activations, norms, Winograd transforms, half widening) are
/// plain Swift loops that LLVM vectorises for the target CPU, and Swift's default target is
/// baseline x86-64 (SSE2: 4 lanes, no FMA, no F16C). SwiftPM builds on the machine that runs the
/// code, so the build reads that machine's CPU flags and targets the widest vector ISA it has
/// (the `-march=native` of C builds; the ISA is never hard-coded). `SD_TARGET_CPU=<llvm cpu>`
/// overrides the choice, e.g. `SD_TARGET_CPU=x86-64` for a binary that must run anywhere.
///
/// SwiftPM refuses unsafe flags (`-target-cpu` is one) in a package used as a versioned
/// dependency, so checked out as one (under a `checkouts` folder) the package adds none and
/// builds portably: OpenBLAS multiplies, with its own run-time CPU dispatch. A dependent that
/// wants our kernels passes the same choice itself:
/// `swift build -c release -Xswiftc -target-cpu -Xswiftc skylake-avx512 -Xswiftc -DSD_AVX512`
/// (or `haswell` and `-DSD_AVX2`).
let isCheckedOutDependency = Context.packageDirectory.split(separator: "/").contains("checkouts")
let targetCPU: String? = {
  if isCheckedOutDependency { return nil }
  if let chosen = ProcessInfo.processInfo.environment["SD_TARGET_CPU"] {
    return chosen.isEmpty ? nil : chosen
  }
  guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
    let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
  else { return nil }
  let flags = Set(line.split(separator: " ").map(String.init))
  let haswell: Set = ["avx2", "fma", "f16c", "bmi2", "movbe"]
  let skylakeAVX512 = haswell.union(["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"])
  if flags.isSuperset(of: skylakeAVX512) { return "skylake-avx512" }
  if flags.isSuperset(of: haswell) { return "haswell" }
  return nil
}()
/// The GEMM micro-kernel is chosen by the vector ISA the build targets (GEMMMicroKernel.swift);
/// builds for other targets multiply through OpenBLAS.
let kernelISA: [String: String] = ["skylake-avx512": "SD_AVX512", "haswell": "SD_AVX2"]
let isaDefine: [SwiftSetting] = targetCPU.flatMap { kernelISA[$0] }.map { [.define($0)] } ?? []
let nativeCode: [SwiftSetting] =
  (targetCPU.map { [.unsafeFlags(["-target-cpu", $0])] } ?? []) + isaDefine

let package = Package(
  name: "StableDiffusionCPU",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "SDTensor", targets: ["SDTensor"]),
    .library(name: "SDModels", targets: ["SDModels"]),
    .library(name: "SDPipeline", targets: ["SDPipeline"]),
    .executable(name: "sd", targets: ["sd"]),
    .executable(name: "bench", targets: ["bench"]),
  ],
  targets: [
    .systemLibrary(
      name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CMalloc"),
    .systemLibrary(name: "CPrefetch"),
    .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
    .systemLibrary(name: "CCPUID"),
    // Compiled for baseline x86-64 (only the ISA define): it checks the CPU before any of the
    // natively compiled code runs.
    .target(name: "CPUCompatibility", dependencies: ["CCPUID"], swiftSettings: isaDefine),
    .target(
      name: "SDTensor", dependencies: ["CBLAS", "CMalloc", "CPrefetch"], swiftSettings: nativeCode),
    .target(
      name: "SDModels", dependencies: ["SDTensor"], resources: [.copy("Resources")],
      swiftSettings: nativeCode),
    .target(name: "SDPipeline", dependencies: ["SDModels", "CPNG"], swiftSettings: nativeCode),
    .executableTarget(name: "sd", dependencies: ["SDPipeline", "CPUCompatibility"]),
    .executableTarget(
      name: "bench", dependencies: ["SDPipeline", "CBLAS", "CPUCompatibility"],
      path: "Benchmarks/bench"),
    .target(name: "SDTestSupport", dependencies: ["SDTensor"], path: "Tests/SDTestSupport"),
    .testTarget(name: "SDTensorTests", dependencies: ["SDTensor", "SDTestSupport"]),
    .testTarget(name: "SDModelsTests", dependencies: ["SDModels", "SDTestSupport"]),
    // The command-line tests run the built `sd` executable, so they depend on it.
    .testTarget(name: "SDPipelineTests", dependencies: ["SDPipeline", "SDTestSupport", "sd"]),
  ],
  swiftLanguageModes: [.v6]
)

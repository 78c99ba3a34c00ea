// swift-tools-version:6.0
// A Stable Diffusion runtime in Swift on the CPU. Layers, bottom up:
// CBLAS -> SDTensor -> SDModels -> SDPipeline (+ CPNG) -> sd / bench.
import PackageDescription

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
    .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
    .target(name: "SDTensor", dependencies: ["CBLAS"]),
    .target(name: "SDModels", dependencies: ["SDTensor"], resources: [.copy("Resources")]),
    .target(name: "SDPipeline", dependencies: ["SDModels", "CPNG"]),
    .executableTarget(name: "sd", dependencies: ["SDPipeline"]),
    .executableTarget(name: "bench", dependencies: ["SDPipeline"], path: "Benchmarks/bench"),
    .target(name: "SDTestSupport", dependencies: ["SDTensor"], path: "Tests/SDTestSupport"),
    .testTarget(name: "SDTensorTests", dependencies: ["SDTensor", "SDTestSupport"]),
    .testTarget(name: "SDModelsTests", dependencies: ["SDModels", "SDTestSupport"]),
    // The command-line tests run the built `sd` executable, so they depend on it.
    .testTarget(name: "SDPipelineTests", dependencies: ["SDPipeline", "SDTestSupport", "sd"]),
  ],
  swiftLanguageModes: [.v6]
)

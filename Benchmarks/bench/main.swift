// `swift run -c release bench`: kernel throughput against this machine's own sgemm peak, and the
// SD 1.5 model parts at full size with synthetic weights (`--model-type sdxl`: SDXL base at
// 1024×1024 from synthetic fp16 files). Prints a human table on stderr and one JSON line on
// stdout. Speed targets live here, never in `swift test`.

import CPUCompatibility
import Foundation
import SDModels
import SDPipeline
import SDTensor

CPUCompatibility.exitIfUnsupported(program: "bench")
let arguments = BenchArguments.parse(CommandLine.arguments.dropFirst())
#if DEBUG
  printError("WARNING: debug build; numbers are meaningless. Use `swift run -c release bench`.")
#endif
// PyTorch runs first and alone, so the two never compete for the cores.
let baseline = arguments.pytorchBaseline.flatMap {
  pytorchBaseline(
    $0, threads: arguments.threads, skipLarge: arguments.skipLarge,
    modelType: arguments.modelType, unetRuns: arguments.unetRuns)
}
// As `sd` does: the process set-up and the options for our kernels.
let options = Runtime.configure(threads: arguments.threads)
var report = BenchReport(threads: arguments.threads)
printError("bench: \(arguments.threads) threads, \(Runtime.matrixKernel)")
printError(
  "timing: sgemm at the UNet's GEMM shapes (the peak everything is measured against), 3x3 convolutions, attention and softmax at SD 1.5 sizes"
    + (arguments.kernelsOnly
      ? ""
      : arguments.modelType == .sdxl
        ? "; then SDXL base from synthetic fp16 files used in place: a \(arguments.size)x\(arguments.size) txt2img (peak memory), both text encoders, a CFG UNet step, the tiled VAE decode (10-20 minutes)"
        : "; then full-size SD 1.5 parts on synthetic weights: CLIP, UNet at 32x32 and 64x64 latents, VAE decode and encode, a 512x512 txt2img, LoRA, few-step and NAG recipes (several minutes)")
    + (baseline != nil ? "; PyTorch's times were taken first" : ""))

// 1. The machine's sgemm peak at the GEMM shapes an SD 1.5 UNet issues (m × k × n): OpenBLAS's
// sgemm on its own threads, and ours (one thread, then split over our threads as the kernels run
// it). The peak is the best of them.
// SDXL adds its feed-forward products at 64×64 (640 channels) and 32×32 (1280) for a CFG batch.
let gemmShapes =
  [(4096, 320, 320), (4096, 2880, 320), (1024, 5760, 640), (256, 11520, 1280)]
  + (arguments.modelType == .sdxl ? [(8192, 640, 5120), (2048, 1280, 10240)] : [])
var peak = 0.0
var peakProduct: Product?
for (m, k, n) in gemmShapes {
  let openBLAS = Product.openBLAS(m: m, k: k, n: n, threads: arguments.threads)
  let openBLASRate = openBLAS.rate
  report.add("sgemm \(m)x\(k)x\(n) openblas t\(arguments.threads)", gflops: openBLASRate)
  let single = Product.ours(m: m, k: k, n: n, options: ComputeOptions(threadCount: 1)).rate
  report.add("sgemm \(m)x\(k)x\(n) ours t1", gflops: single)
  let split = Product.ours(m: m, k: k, n: n, options: options)
  let splitRate = split.rate
  report.add("sgemm \(m)x\(k)x\(n) ours t\(arguments.threads)", gflops: splitRate)
  for (product, rate) in [(openBLAS, openBLASRate), (split, splitRate)] where rate > peak {
    (peak, peakProduct) = (rate, product)
  }
}
// The per-head attention GEMMs (head size 40): Q·Kᵀ and P·V for a block of 512 queries.
for (m, k, n) in [(512, 40, 4096), (512, 4096, 40)] {
  report.add(
    "sgemm attention \(m)x\(k)x\(n) ours t1",
    gflops: Product.ours(m: m, k: k, n: n, options: ComputeOptions(threadCount: 1)).rate)
}
report.peakGFLOPS = peak
printError(String(format: "sgemm peak (%d threads): %.1f GFLOP/s", arguments.threads, peak))

// 2. Our kernels at SD 1.5 sizes as a fraction of that peak.
// The 3×3 convolutions of the UNet's four levels.
for (channels, side) in [(320, 64), (640, 32), (1280, 16), (1280, 8)] {
  let x = benchTensor([2, channels, side, side])
  let w = benchTensor([channels, channels, 3, 3])
  let b = benchTensor([channels])
  let flops = 2.0 * 2 * Double(channels * side * side * channels * 9)
  let seconds = timeMedian(runs: 5) {
    _ = conv2d(x, weight: w, bias: b, padding: 1, options: options)
  }
  report.add("conv2d 3x3 2x\(channels)x\(side)x\(side)", seconds: seconds, flops: flops)
}
do {
  let q = benchTensor([2, 4096, 320])
  let flops = 2.0 * 2 * 2 * 4096 * 4096 * 320
  let attention = {
    _ = scaledDotProductAttention(query: q, key: q, value: q, heads: 8, options: options)
  }
  let seconds = timeMedian(runs: 3, attention)
  report.add("attention 2x8x4096x40", seconds: seconds, flops: flops)
  // The same attention against the peak's own product, call by call. The row above divides by
  // a peak measured a minute earlier, and on a shared host the load moves within a minute (the
  // same code read 77.8, 88.9 and 82.7 % in three runs); each pair here runs both under the
  // same load, and the median of their ratios is the kernel's share of the peak.
  if let peakProduct {
    let shares = (0..<attentionPairCount).map { _ in
      let peakSeconds = timeMedian(runs: 1, warmUp: false, peakProduct.call)
      let attentionSeconds = timeMedian(runs: 1, warmUp: false, attention)
      return (flops / attentionSeconds) / (peakProduct.flops / peakSeconds)
    }
    let sorted = shares.sorted().map { 100 * $0 }
    report.extra[attentionPairsKey] = median(sorted)
    printError(
      String(
        format: "attention against the peak's product, %d pairs: median %.1f%% (%.1f-%.1f%%)",
        sorted.count, median(sorted), sorted[0], sorted[sorted.count - 1]))
  }
  // Its operands (up to 40 MB) would otherwise stay resident through the model parts, whose
  // peak the bench reports.
  peakProduct = nil
}

do {
  let scores = benchTensor([2048, 4096])
  let seconds = timeMedian(runs: 3) { _ = softmax(scores, options: options) }
  report.add("softmax 2048x4096", seconds: seconds)
  report.extra["softmax ns per element"] = seconds / Double(scores.count) * 1e9
}

if !arguments.kernelsOnly {
  switch arguments.modelType {
  case .sd15: try runModelBenchmarks(arguments: arguments, options: options, report: &report)
  case .sdxl: try runSDXLBenchmarks(arguments: arguments, options: options, report: &report)
  }
}
// The model benchmarks read the peak before their synthetic LoRA rebuild; kernels-only runs here.
if report.peakResidentBytes == 0 { report.peakResidentBytes = peakResidentBytes() }
if let baseline { report.compare(withBaseline: baseline) }
printError(report.table)
printError(report.summary)
print(report.json)

// `bench --model-type sdxl`: SDXL base at full size and 1024×1024 (issue 21) from a diffusers
// folder of synthetic fp16 weights (or the user's with --weights), loaded as `sd` loads a
// model, so the weights are used in place in the file mapping and the memory figure is a
// real generation's: both text encoders, a CFG UNet step at 128×128 latents with the added
// conditions, the tiled VAE decode, and a whole txt2img through the pipeline.

import Foundation
import SDModels
import SDPipeline
import SDTensor

/// Loads (after writing, if needed) an SDXL folder and times its parts; PyTorch's rows of the
/// same names come from `pytorch_baseline.py --model-type sdxl`.
func runSDXLBenchmarks(
  arguments: BenchArguments, options: ComputeOptions, report: inout BenchReport
) throws {
  let folder: URL
  var temporary: URL?
  if let weights = arguments.weights {
    folder = URL(fileURLWithPath: weights)
  } else {
    let cache =
      arguments.weightsCache.map { URL(fileURLWithPath: $0) }
      ?? FileManager.default.temporaryDirectory.appendingPathComponent(
        "bench-sdxl-\(ProcessInfo.processInfo.processIdentifier)")
    if arguments.weightsCache == nil { temporary = cache }
    let start = DispatchTime.now().uptimeNanoseconds
    printError("bench: synthetic SDXL base folder (fp16 files) at \(cache.path)")
    if try writeSyntheticSDXLFolder(at: cache) {
      report.extra["SDXL synthetic folder write seconds"] = secondsSince(start)
    }
    folder = cache
  }
  defer { if let temporary { try? FileManager.default.removeItem(at: temporary) } }
  let halfPrecision = !arguments.fullPrecisionWeights
  report.extra["fp16 weights in memory"] = halfPrecision ? 1 : 0

  // Memory of load + one generation, as `sd generate` would hold it (the kernel benchmarks
  // before it leave ~0.1 GB of freed heap that glibc keeps, counted here too).
  resetPeakResidentBytes()
  var start = DispatchTime.now().uptimeNanoseconds
  let pipeline = try StableDiffusionPipeline(modelAt: folder, halfPrecisionWeights: halfPrecision)
  report.extra["SDXL load seconds"] = secondsSince(start)
  report.extra["SDXL resident GB after load"] = Double(residentBytes()) / 1e9
  guard pipeline.unusedWeights.isEmpty else {
    fail(
      "\(pipeline.unusedWeights.count) tensors no layer read: \(pipeline.unusedWeights.prefix(5))")
  }
  guard let textEncoder2 = pipeline.textEncoder2,
    let added = pipeline.unet.configuration.textTimeEmbedding
  else { fail("\(folder.path) is not an SDXL model (no text_encoder_2 or text_time embedding)") }
  if arguments.weights == nil {
    precondition(
      pipeline.unet.configuration == .stableDiffusionXL
        && pipeline.vae.configuration == .stableDiffusionXL,
      "the written config.json files decode to SDXL base's presets")
  }
  try runTextToImage(pipeline, arguments: arguments, options: options, report: &report)
  report.peakResidentBytes = peakResidentBytes()
  report.notes.append(
    "peak resident memory: load + one \(arguments.size)x\(arguments.size) generation ("
      + (halfPrecision ? "fp16 files, used in place" : "fp16 files widened to fp32") + ")")

  // The parts on their own (every model's pages resident at once, unlike the pipeline).
  resetPeakResidentBytes()
  let ids = [
    [49406] + Array(repeating: 49407, count: 76),
    [49406, 320, 1125, 539, 320, 2368] + Array(repeating: 49407, count: 71),
  ]
  report.add(
    "SDXL text encoders batch 2",
    seconds: timeMedian(runs: 3) {
      _ = pipeline.textEncoder(ids, options: options)
      _ = textEncoder2(ids, options: options)
    })
  let side = arguments.size / pipeline.vaeScaleFactor
  let unet = pipeline.unet
  let sample = guidedSample(side: side)
  let context = CrossAttentionContext(benchTensor([2, 77, unet.configuration.crossAttentionDim]))
  let size = Float(arguments.size)
  let conditions = AddedConditions(
    textEmbeds: benchTensor([2, added.pooledWidth]),
    timeIDs: Array(repeating: [size, size, 0, 0, size, size], count: 2))
  let flops = unetFLOPs(unet.configuration, height: side, width: side, batch: 2)
  start = DispatchTime.now().uptimeNanoseconds
  let unetSeconds = timeMedian(runs: arguments.unetRuns) {
    _ = unet(sample, timesteps: [999, 999], context: context, added: conditions, options: options)
  }
  report.add(
    "SDXL UNet batch 2 latent \(side)x\(side)", seconds: unetSeconds, flops: flops.total)
  report.extra["SDXL UNet \(side)x\(side) GFLOP conv"] = flops.convolution / 1e9
  report.extra["SDXL UNet \(side)x\(side) GFLOP linear"] = flops.linear / 1e9
  report.extra["SDXL UNet \(side)x\(side) GFLOP attention"] = flops.attention / 1e9
  // Where the step's attention goes at 1024×1024: self-attention at the 64×64 level (4096
  // tokens, 10 heads of 64; 2 + 3 transformers of 2 layers: 10 calls a step) and the 32×32
  // level (1024 tokens, 20 heads; 2 + 1 + 3 transformers of 10 layers: 60 calls).
  for (tokens, channels, heads, calls) in [(4096, 640, 10, 10), (1024, 1280, 20, 60)] {
    let q = benchTensor([2, tokens, channels])
    let seconds = timeMedian(runs: 1) {
      _ = scaledDotProductAttention(query: q, key: q, value: q, heads: heads, options: options)
    }
    report.add(
      "  SDXL self-attention 2x\(heads)x\(tokens)x\(channels / heads)", seconds: seconds,
      flops: 2.0 * 2 * 2 * Double(tokens * tokens * channels))
    report.extra["SDXL self-attention \(tokens) tokens, seconds per step"] =
      seconds * Double(calls)
  }
  let latents = benchTensor([1, 4, side, side])
  report.add(
    "SDXL VAE decode tiled \(side)x\(side) -> \(arguments.size)x\(arguments.size)",
    seconds: timeMedian(runs: 1, warmUp: false) {
      _ = pipeline.vae.decodeTiled(latents, options: options)
    })
  report.extra["SDXL parts peak resident GB (all weights resident)"] =
    Double(peakResidentBytes()) / 1e9
}

/// Seconds since `start` (a `DispatchTime` uptime in nanoseconds).
private func secondsSince(_ start: UInt64) -> Double {
  Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

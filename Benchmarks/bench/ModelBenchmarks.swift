// Full-size SD 1.5 model parts with synthetic weights (or the user's with --weights), and the
// FLOP counts that turn their times into fractions of the sgemm peak.

import Foundation
import SDModels
import SDPipeline
import SDTensor

/// FLOPs of one UNet forward, split by kind (multiply-add = 2 FLOPs).
struct FLOPCount {
  var convolution = 0.0
  var linear = 0.0
  var attention = 0.0
  var total: Double { convolution + linear + attention }
}

/// Counts the GEMM and attention FLOPs of `UNetConfiguration` at a latent size and batch: every
/// level's transformer layers (`transformerLayersPerBlock`, 10 at SDXL's deepest level), and the
/// time and SDXL added embeddings' MLPs (a few MFLOP, counted for completeness).
func unetFLOPs(_ config: UNetConfiguration, height: Int, width: Int, batch: Int, tokens: Int = 77)
  -> FLOPCount
{
  var count = FLOPCount()
  var (h, w) = (height, width)
  let embedding = Double(config.timeEmbeddingChannels)
  count.linear += 2 * (Double(config.blockOutChannels[0]) + embedding) * embedding
  if let added = config.textTimeEmbedding {
    count.linear += 2 * (Double(added.inputWidth) + embedding) * embedding
  }
  func conv(_ cin: Int, _ cout: Int, _ k: Int, _ pixels: Int) {
    count.convolution += 2.0 * Double(pixels * cin * cout * k * k)
  }
  func resnet(_ cin: Int, _ cout: Int) {
    conv(cin, cout, 3, h * w)
    conv(cout, cout, 3, h * w)
    if cin != cout { conv(cin, cout, 1, h * w) }
    count.linear += 2 * embedding * Double(cout)  // time_emb_proj
  }
  // A Transformer2DModel of `depth` BasicTransformerBlocks between proj_in and proj_out.
  func transformer(_ c: Int, depth: Int) {
    let t = Double(h * w)
    let c2 = Double(c * c)
    let layers = Double(depth)
    count.linear += 2 * t * c2 * 2  // proj_in, proj_out
    count.linear += layers * 2 * t * c2 * 4  // attn1 q, k, v, out
    count.linear +=
      layers * (2 * t * c2 * 2 + 2 * Double(tokens * config.crossAttentionDim * c) * 2)  // attn2
    count.linear += layers * (2 * t * c2 * 8 + 2 * t * c2 * 4)  // GEGLU feed-forward
    count.attention += layers * (2 * 2 * t * t * Double(c) + 2 * 2 * t * Double(tokens * c))
  }
  let depths = config.transformerLayersPerBlock
  let channels = config.blockOutChannels
  conv(config.inChannels, channels[0], 3, h * w)
  var output = channels[0]
  for (index, attention) in config.downBlockHasAttention.enumerated() {
    let input = output
    output = channels[index]
    for layer in 0..<config.layersPerBlock {
      resnet(layer == 0 ? input : output, output)
      if attention { transformer(output, depth: depths[index]) }
    }
    if index < channels.count - 1 {
      h = (h + 1) / 2
      w = (w + 1) / 2
      conv(output, output, 3, h * w)
    }
  }
  resnet(output, output)
  transformer(output, depth: depths[depths.count - 1])
  resnet(output, output)
  let reversed = Array(channels.reversed())
  for (index, attention) in config.upBlockHasAttention.enumerated() {
    let previous = output
    output = reversed[index]
    let input = reversed[min(index + 1, channels.count - 1)]
    for layer in 0...config.layersPerBlock {
      let skip = layer == config.layersPerBlock ? input : output
      resnet((layer == 0 ? previous : output) + skip, output)
      if attention { transformer(output, depth: depths[depths.count - 1 - index]) }
    }
    if index < channels.count - 1 {
      h *= 2
      w *= 2
      conv(output, output, 3, h * w)
    }
  }
  conv(channels[0], config.outChannels, 3, h * w)
  count.convolution *= Double(batch)
  count.linear *= Double(batch)
  count.attention *= Double(batch)
  return count
}

/// FLOPs of one VAE decode of a `height`×`width` latent.
func vaeDecoderFLOPs(_ config: AutoencoderConfiguration, height: Int, width: Int) -> Double {
  var flops = 0.0
  var (h, w) = (height, width)
  func conv(_ cin: Int, _ cout: Int, _ k: Int) { flops += 2.0 * Double(h * w * cin * cout * k * k) }
  let channels = Array(config.blockOutChannels.reversed())
  conv(config.latentChannels, config.latentChannels, 1)
  conv(config.latentChannels, channels[0], 3)
  conv(channels[0], channels[0], 3)
  conv(channels[0], channels[0], 3)
  let t = Double(h * w)
  let c = Double(channels[0])
  flops += 2 * t * c * c * 4 + 2 * 2 * t * t * c
  conv(channels[0], channels[0], 3)
  conv(channels[0], channels[0], 3)
  var output = channels[0]
  for (index, channel) in channels.enumerated() {
    for layer in 0...config.layersPerBlock {
      let input = layer == 0 ? output : channel
      conv(input, channel, 3)
      conv(channel, channel, 3)
      if input != channel { conv(input, channel, 1) }
    }
    output = channel
    if index < channels.count - 1 {
      h *= 2
      w *= 2
      conv(channel, channel, 3)
    }
  }
  conv(output, config.outChannels, 3)
  return flops
}

/// FLOPs of one TAESD decode of a `height`×`width` latent: its 3×3 convolutions (every stage
/// is equally wide; the ReLUs, additions and upsamplings are memory traffic).
func tinyDecoderFLOPs(_ config: AutoencoderTinyConfiguration, height: Int, width: Int) -> Double {
  var flops = 0.0
  var (h, w) = (height, width)
  func conv(_ cin: Int, _ cout: Int) { flops += 2.0 * Double(h * w * cin * cout * 9) }
  let c = config.decoderBlockOutChannels[0]
  conv(config.latentChannels, c)
  for (stage, blocks) in config.decoderBlockCounts.enumerated() {
    for _ in 0..<3 * blocks { conv(c, c) }
    let isLast = stage == config.decoderBlockCounts.count - 1
    if !isLast {
      h *= config.upsamplingScalingFactor
      w *= config.upsamplingScalingFactor
    }
    conv(c, isLast ? config.outChannels : c)
  }
  return flops
}

/// Times the text encoder, the UNet at two latent sizes and the VAE decoder.
func runModelBenchmarks(
  arguments: BenchArguments, options: ComputeOptions, report: inout BenchReport
) throws {
  let store = WeightStore(syntheticSeed: 1, keepsHalfPrecision: arguments.halfPrecisionWeights)
  report.extra["fp16 weights in memory"] = arguments.halfPrecisionWeights ? 1 : 0
  // --weights: the user's model; otherwise synthetic weights of SD 1.5's shapes.
  let loaded = try arguments.weights.map {
    try StableDiffusionPipeline(
      modelAt: URL(fileURLWithPath: $0), halfPrecisionWeights: arguments.halfPrecisionWeights)
  }

  // The user's VAE, or a synthetic one (built only when a VAE benchmark runs).
  func vaeModel() throws -> AutoencoderKL {
    try loaded?.vae ?? AutoencoderKL(configuration: .stableDiffusion15, weights: store)
  }
  if arguments.vaeOnly {
    runVAEBenchmarks(try vaeModel(), options: options, report: &report)
    return
  }
  var start = DispatchTime.now().uptimeNanoseconds
  let textModel =
    try loaded?.textEncoder ?? CLIPTextModel(configuration: .stableDiffusion15, weights: store)
  let ids = [
    [49406] + Array(repeating: 49407, count: 76),
    [49406, 320, 1125, 539, 320, 2368] + Array(repeating: 49407, count: 71),
  ]
  if !arguments.unetOnly {
    report.add(
      "CLIP text encoder batch 2",
      seconds: timeMedian(runs: 3) { _ = textModel(ids, options: options) })
  }

  start = DispatchTime.now().uptimeNanoseconds
  let unet =
    try loaded?.unet ?? UNet2DConditionModel(configuration: .stableDiffusion15, weights: store)
  report.extra["unet synthetic build seconds"] =
    Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
  let context = benchTensor([2, 77, unet.configuration.crossAttentionDim])
  // A profile by part at the 64×64 level, where most of the time goes.
  if let block = unet.downBlocks.first, let transformer = block.attentions.first {
    let channels = unet.configuration.blockOutChannels[0]
    let x = benchTensor([2, channels, 64, 64])
    let embedding = benchTensor([2, channels * 4])
    report.add(
      "  ResnetBlock2D 2x\(channels)x64x64",
      seconds: timeMedian(runs: 2) {
        _ = block.resnets[0](x, timeEmbedding: embedding, options: options)
      })
    report.add(
      "  Transformer2DModel 2x\(channels)x64x64",
      seconds: timeMedian(runs: 1) {
        _ = transformer(x, context: CrossAttentionContext(context), options: options)
      })
    let tokens = benchTensor([2, 4096, channels])
    let layer = transformer.transformerBlocks[0]
    report.add(
      "    self-attention 4096 tokens",
      seconds: timeMedian(runs: 1) { _ = layer.attn1(tokens, options: options) })
    report.add(
      "    cross-attention 77 tokens",
      seconds: timeMedian(runs: 1) { _ = layer.attn2(tokens, states: context, options: options) })
    report.add(
      "    GEGLU feed-forward",
      seconds: timeMedian(runs: 1) {
        _ = layer.ffOut(
          geglu(layer.ffProj(tokens, options: options), options: options), options: options)
      })
  }
  for size in arguments.skipLarge ? [32] : [32, 64] {
    let sample = guidedSample(side: size)
    let flops = unetFLOPs(unet.configuration, height: size, width: size, batch: 2)
    let seconds = timeMedian(runs: size == 64 ? arguments.unetRuns : 2) {
      _ = unet(sample, timesteps: [999, 999], context: context, options: options)
    }
    report.add("UNet batch 2 latent \(size)x\(size)", seconds: seconds, flops: flops.total)
    report.extra["UNet \(size)x\(size) GFLOP conv"] = flops.convolution / 1e9
    report.extra["UNet \(size)x\(size) GFLOP linear"] = flops.linear / 1e9
    report.extra["UNet \(size)x\(size) GFLOP attention"] = flops.attention / 1e9
  }
  if arguments.interleavedPairs > 0 && !arguments.skipLarge {
    runInterleavedUNet(
      unet, context: context, pairs: arguments.interleavedPairs, threads: arguments.threads,
      options: options, report: &report)
  }
  if !arguments.skipLarge && !arguments.unetOnly {
    let vae = try vaeModel()
    runVAEBenchmarks(vae, options: options, report: &report)
    let pipeline =
      try loaded
      ?? StableDiffusionPipeline(
        tokenizer: CLIPTokenizer.bundled(), textEncoder: textModel, unet: unet, vae: vae,
        schedulerConfiguration: .stableDiffusion15, defaultSampler: .pndm)
    try runTextToImage(pipeline, arguments: arguments, options: options, report: &report)
    try runFewStepRecipes(pipeline, arguments: arguments, options: options, report: &report)
  }
  // Last, and after the run's peak memory is read: rebuilding the UNet from synthetic weights
  // generates a second copy of them (from files, only the merged layers would be new).
  report.peakResidentBytes = peakResidentBytes()
  if loaded == nil && !arguments.skipLarge {
    try runLoRABenchmarks(
      store: store, unet: unet, context: context, options: options, report: &report)
  }
}

/// The 64×64 CFG UNet step, PyTorch's and ours in turn, `pairs` times: on a shared host whose
/// load changes within minutes, a pair's two steps see the same minute, where the sequential
/// baseline's run minutes before ours. Reports the medians and the median of the pairs' ratios.
func runInterleavedUNet(
  _ unet: UNet2DConditionModel, context: Tensor, pairs: Int, threads: Int,
  options: ComputeOptions, report: inout BenchReport
) {
  printError("bench: starting PyTorch's UNet in a second process for \(pairs) interleaved pairs")
  guard let server = PyTorchUNetServer(latentSize: 64, threads: threads) else { return }
  let sample = guidedSample(side: 64)
  var (ours, theirs, ratios) = ([Double](), [Double](), [Double]())
  for pair in 1...pairs {
    guard let pytorch = server.step() else {
      printError("bench: the PyTorch UNet process ended")
      break
    }
    let seconds = timeMedian(runs: 1, warmUp: false) {
      _ = unet(sample, timesteps: [999, 999], context: context, options: options)
    }
    ours.append(seconds)
    theirs.append(pytorch)
    ratios.append(seconds / pytorch)
    printError(
      String(
        format: "  pair %d: PyTorch %.2f s, ours %.2f s, ratio %.3f", pair, pytorch, seconds,
        seconds / pytorch))
  }
  guard !ratios.isEmpty else { return }
  let name = "UNet batch 2 latent 64x64 interleaved"
  report.add(
    name, seconds: median(ours),
    flops: unetFLOPs(unet.configuration, height: 64, width: 64, batch: 2).total)
  report.extra["pytorch seconds \(name)"] = median(theirs)
  report.extra["ratio ours/pytorch \(name), median of pairs"] = median(ratios)
  report.extra["ratio ours/pytorch \(name), lowest pair"] = ratios.min() ?? 0
  report.extra["ratio ours/pytorch \(name), highest pair"] = ratios.max() ?? 0
}

/// Times the VAE decoder (64×64 latents -> 512×512) and encoder (512×512 -> 64×64 latents).
func runVAEBenchmarks(_ vae: AutoencoderKL, options: ComputeOptions, report: inout BenchReport) {
  let latents = benchTensor([1, 4, 64, 64])
  let seconds = timeMedian(runs: 1, warmUp: false) { _ = vae.decode(latents, options: options) }
  report.add(
    "VAE decode 64x64 -> 512x512", seconds: seconds,
    flops: vaeDecoderFLOPs(vae.configuration, height: 64, width: 64))
  // TAESD beside it (diffusers' AutoencoderTiny() shapes, synthetic weights: a weights folder
  // has no TAESD); a synthetic store has every key, so building it cannot fail.
  if let taesd = try? AutoencoderTiny(configuration: .taesd, weights: WeightStore(syntheticSeed: 7))
  {
    let tinySeconds = timeMedian(runs: 3, warmUp: true) {
      _ = taesd.decode(latents, options: options)
    }
    report.add(
      "TAESD decode 64x64 -> 512x512", seconds: tinySeconds,
      flops: tinyDecoderFLOPs(taesd.configuration, height: 64, width: 64))
  }
  let image = benchTensor([1, 3, 512, 512])
  let encodeSeconds = timeMedian(runs: 1, warmUp: false) { _ = vae.encode(image, options: options) }
  report.add("VAE encode 512x512", seconds: encodeSeconds)
}

/// A whole 512×512 txt2img with a negative prompt through the pipeline (DPM++ 2M, guidance
/// 7.5, so the UNet runs at batch 2), timed by phase (the step as the median interval between
/// step callbacks), and projected to 20 steps.
func runTextToImage(
  _ pipeline: StableDiffusionPipeline, arguments: BenchArguments, options: ComputeOptions,
  report: inout BenchReport
) throws {
  var request = GenerationRequest(
    prompt: "a photograph of an astronaut riding a horse",
    negativePrompt: "blurry, lowres, bad hands",
    steps: arguments.steps, seed: 0, sampler: .dpmSolverMultistep, width: arguments.size,
    height: arguments.size)
  request.guidance.scale = 7.5
  // The text encoder timed on its own: inside the generation it is folded into the first step.
  let textStart = DispatchTime.now().uptimeNanoseconds
  for prompt in [request.prompt, request.negativePrompt ?? ""] {
    _ = pipeline.encode(prompt: prompt, options: options)
  }
  let (start, marks, end) = try timedGeneration(pipeline, request, options: options)
  func seconds(_ from: UInt64, _ to: UInt64) -> Double { Double(to - from) / 1e9 }
  let stepTimes = zip(marks, marks.dropFirst()).map { seconds($0, $1) }
  let text = seconds(textStart, start)
  // The first step's interval also holds the generation's own prompt encoding, and the first
  // touch of the UNet's weights; the later steps' median is the step (with one step, the first).
  let firstStep = seconds(start, marks[0]) - text
  let step = stepTimes.isEmpty ? firstStep : median(stepTimes)
  let decode = seconds(marks[marks.count - 1], end)
  let size = "\(arguments.size)x\(arguments.size)"
  report.add("txt2img \(size) text encoding (2 prompts)", seconds: text)
  report.add("txt2img \(size) UNet step (CFG batch 2)", seconds: step)
  report.add("txt2img \(size) first UNet step", seconds: firstStep)
  report.add("txt2img \(size) VAE decode", seconds: decode)
  report.add("txt2img \(size) total \(arguments.steps) steps", seconds: seconds(start, end))
  report.add("txt2img \(size) projected 20 steps", seconds: text + 20 * step + decode)
}

/// One generation's start, the end of each of its steps, and its end, in nanoseconds.
private func timedGeneration(
  _ pipeline: StableDiffusionPipeline, _ request: GenerationRequest, options: ComputeOptions
) throws -> (start: UInt64, stepEnds: [UInt64], end: UInt64) {
  let start = DispatchTime.now().uptimeNanoseconds
  var marks: [UInt64] = []
  _ = try pipeline.generate(request, options: options) { _ in
    marks.append(DispatchTime.now().uptimeNanoseconds)
    return true
  }
  return (start, marks, DispatchTime.now().uptimeNanoseconds)
}

/// Seconds per image of the few-step recipes at the txt2img size: LCM (4 steps, guidance 1, as
/// LCM-LoRA and LCM checkpoints run), the same with a NAG negative prompt, and SD-Turbo's single
/// Euler-ancestral step with trailing spacing. The NAG step against the CFG step of the
/// 20-step run is the issue's ≤ 0.6 target (one UNet row plus the negative's attention).
func runFewStepRecipes(
  _ pipeline: StableDiffusionPipeline, arguments: BenchArguments, options: ComputeOptions,
  report: inout BenchReport
) throws {
  let size = "\(arguments.size)x\(arguments.size)"
  let lcm = GenerationRequest(
    prompt: "a photograph of an astronaut riding a horse", steps: 4, guidance: Guidance(scale: 1),
    seed: 0, sampler: .lcm, width: arguments.size, height: arguments.size)
  var nag = lcm
  nag.negativePrompt = "blurry, lowres, bad hands"
  nag.guidance.rule = .nag
  var turbo = lcm
  turbo.steps = 1
  turbo.sampler = .eulerAncestral
  turbo.timestepSpacing = .trailing
  for (name, request) in [
    ("LCM 4 steps", lcm), ("LCM 4 steps + NAG negative", nag), ("Turbo 1 step", turbo),
  ] {
    let (start, marks, end) = try timedGeneration(pipeline, request, options: options)
    let steps = zip(marks, marks.dropFirst()).map { Double($1 - $0) / 1e9 }
    if !steps.isEmpty { report.add("\(name) \(size): UNet step", seconds: median(steps)) }
    report.add("\(name) \(size): image", seconds: Double(end - start) / 1e9)
  }
}

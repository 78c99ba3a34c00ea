// txt2img and img2img, as diffusers' StableDiffusionPipeline and StableDiffusionImg2ImgPipeline
// run them on the CPU: encode prompts, draw noise from the torch-compatible generator, denoise
// with a scheduler and the guidance layer, decode with the VAE.

import Foundation
import SDModels
import SDTensor

/// A loaded Stable Diffusion 1.x/2.x model. Immutable and `Sendable`: one instance can serve
/// several generations on different threads.
public struct StableDiffusionPipeline: Sendable {
  public let tokenizer: CLIPTokenizer
  public let textEncoder: CLIPTextModel
  public let unet: UNet2DConditionModel
  public let vae: AutoencoderKL
  /// The scheduler settings of the model (`scheduler/scheduler_config.json`).
  public let schedulerConfiguration: SchedulerConfiguration
  /// The sampler the model's scheduler config names (`_class_name`), used when a request names
  /// none.
  public let defaultSampler: SchedulerKind

  /// Assembles a pipeline from loaded parts.
  public init(
    tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, unet: UNet2DConditionModel,
    vae: AutoencoderKL, schedulerConfiguration: SchedulerConfiguration, defaultSampler: SchedulerKind
  ) {
    self.tokenizer = tokenizer
    self.textEncoder = textEncoder
    self.unet = unet
    self.vae = vae
    self.schedulerConfiguration = schedulerConfiguration
    self.defaultSampler = defaultSampler
  }

  /// Loads a diffusers model folder (`text_encoder/`, `tokenizer/`, `unet/`, `vae/`,
  /// `scheduler/`; fp32 or fp16 safetensors). A folder without `tokenizer/` uses the bundled CLIP
  /// vocabulary; one without `scheduler/` uses SD 1.5's PNDM settings.
  /// - Throws: `PipelineError` naming the file that is missing or wrong.
  public init(modelAt url: URL) throws(PipelineError) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
      throw .invalidArgument(name: "model", reason: "\(url.path) is not a diffusers model folder")
    }
    do {
      let tokenizerFolder = url.appendingPathComponent("tokenizer")
      tokenizer =
        FileManager.default.fileExists(atPath: tokenizerFolder.path)
        ? try CLIPTokenizer(directory: tokenizerFolder) : try CLIPTokenizer.bundled()
      textEncoder = try CLIPTextModel(directory: url.appendingPathComponent("text_encoder"))
      unet = try UNet2DConditionModel(directory: url.appendingPathComponent("unet"))
      vae = try AutoencoderKL(directory: url.appendingPathComponent("vae"))
    } catch {
      throw .model(error)
    }
    let schedulerFile = url.appendingPathComponent("scheduler/scheduler_config.json")
    if FileManager.default.fileExists(atPath: schedulerFile.path) {
      schedulerConfiguration = try SchedulerConfiguration(contentsOf: schedulerFile)
      defaultSampler = schedulerConfiguration.kind ?? .pndm
    } else {
      schedulerConfiguration = .stableDiffusion15
      defaultSampler = .pndm
    }
    guard textEncoder.configuration.hiddenSize == unet.configuration.crossAttentionDim else {
      throw .invalidArgument(
        name: "model",
        reason: "text encoder width \(textEncoder.configuration.hiddenSize) does not match the UNet's cross_attention_dim \(unet.configuration.crossAttentionDim)")
    }
  }

  /// Pixels per latent along each axis (8 for SD).
  public var vaeScaleFactor: Int { vae.configuration.scaleFactor }

  /// The text embeddings of `prompt` `[1, 77, hidden]` and the tokens cut by the 77-token limit.
  public func encode(prompt: String, clipSkip: Int = 0, options: ComputeOptions) -> (Tensor, [String]) {
    let ids = tokenizer.encode(prompt)
    let kept = CLIPTokenizer.maxLength - 2
    let cut = ids.count > kept ? tokenizer.tokenStrings(Array(ids[kept...])) : []
    return (textEncoder([tokenizer.tokenize(prompt)], skipLastLayers: clipSkip, options: options), cut)
  }

  /// Runs one generation.
  /// - Parameter progress: called after every step; return false to cancel.
  /// - Throws: `PipelineError.invalidArgument` for a bad request, `.cancelled` when cancelled.
  public func generate(
    _ request: GenerationRequest, options: ComputeOptions,
    progress: ((GenerationProgress) -> Bool)? = nil
  ) throws(PipelineError) -> GenerationResult {
    let factor = vaeScaleFactor
    let width = request.width ?? unet.configuration.sampleSize * factor
    let height = request.height ?? unet.configuration.sampleSize * factor
    try validate(request, width: width, height: height)
    let guidance = try ClassifierFreeGuidance(scale: request.guidanceScale, rescale: request.guidanceRescale)
    let sampler = request.sampler ?? defaultSampler
    var scheduler = try makeScheduler(sampler, configuration: schedulerConfiguration, steps: request.steps)

    // Text: [negative, positive] rows, the negative one only when guidance uses it.
    let (positive, positiveCut) = encode(prompt: request.prompt, clipSkip: request.clipSkip, options: options)
    var context = positive
    var negativeCut: [String] = []
    if guidance.usesNegativeBranch {
      let negative: Tensor
      if let embeddings = request.negativePromptEmbeddings {
        guard embeddings.shape == positive.shape else {
          throw .invalidArgument(name: "negativePromptEmbeddings", reason: "shape \(embeddings.shape), expected \(positive.shape)")
        }
        negative = embeddings
      } else {
        (negative, negativeCut) = encode(prompt: request.negativePrompt ?? "", clipSkip: request.clipSkip, options: options)
      }
      context = concatenate([negative, positive], axis: 0)
    }

    // Noise: one generator for everything, drawn in diffusers' order (img2img: the VAE sample
    // first, then the initial noise; ancestral samplers: then one draw per step).
    var generator = TorchGenerator(seed: request.seed)
    let latentShape = [1, unet.configuration.inChannels, height / factor, width / factor]
    var latents: Tensor
    var firstStep = 0
    if let initImage = request.initImage {
      let (mean, logVariance) = vae.encode(initImage.tensor, options: options)
      let sample = generator.randn(mean.shape)
      let imageLatents = (mean + logVariance.map { Foundation.exp(0.5 * $0) } * sample) * vae.configuration.scalingFactor
      firstStep = scheduler.firstStep(strength: request.strength)
      let noise = generator.randn(latentShape)
      latents = scheduler.addNoise(to: imageLatents, noise: noise, stepIndex: firstStep)
    } else {
      latents = generator.randn(latentShape) * scheduler.initNoiseSigma
    }

    let initialLatents = latents
    let timesteps = scheduler.timesteps
    for index in firstStep..<timesteps.count {
      let t = timesteps[index]
      let input = scheduler.scaleModelInput(guidance.modelInput(latents), stepIndex: index)
      let prediction = unet(input, timesteps: Array(repeating: t, count: input.shape[0]), context: context, options: options)
      let guided = guidance.guidedPrediction(prediction)
      latents = scheduler.step(noisePrediction: guided, stepIndex: index, sample: latents, generator: &generator)
      let report = GenerationProgress(
        step: index - firstStep + 1, totalSteps: timesteps.count - firstStep, timestep: t,
        latents: latents, noisePrediction: guided)
      if let progress, !progress(report) { throw .cancelled }
    }

    let decoded = vae.decode(latents * (1 / vae.configuration.scalingFactor), options: options)
    return GenerationResult(
      image: RGBImage(decoded: decoded), initialLatents: initialLatents, latents: latents,
      decoded: decoded, sampler: sampler,
      truncatedTokens: (positiveCut, negativeCut))
  }

  private func validate(_ request: GenerationRequest, width: Int, height: Int) throws(PipelineError) {
    let factor = vaeScaleFactor
    for (name, value) in [("width", width), ("height", height)] {
      guard value > 0, value % factor == 0 else {
        throw .invalidArgument(name: name, reason: "must be a positive multiple of \(factor), got \(value)")
      }
      guard value <= 4096 else { throw .invalidArgument(name: name, reason: "at most 4096, got \(value)") }
    }
    guard request.steps > 0, request.steps <= 1000 else {
      throw .invalidArgument(name: "steps", reason: "must be in 1...1000, got \(request.steps)")
    }
    guard request.strength.isFinite, request.strength > 0, request.strength <= 1 else {
      throw .invalidArgument(name: "strength", reason: "must be in (0, 1], got \(request.strength)")
    }
    guard request.clipSkip >= 0, request.clipSkip < textEncoder.layers.count else {
      throw .invalidArgument(name: "clipSkip", reason: "must be in 0..<\(textEncoder.layers.count), got \(request.clipSkip)")
    }
    if let image = request.initImage, image.width != width || image.height != height {
      throw .invalidArgument(name: "initImage", reason: "is \(image.width)x\(image.height), the request is \(width)x\(height)")
    }
  }
}

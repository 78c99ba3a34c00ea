// txt2img and img2img, as diffusers' StableDiffusionPipeline and StableDiffusionImg2ImgPipeline
// run them on the CPU: encode prompts, draw noise from the torch-compatible generator, denoise
// with a scheduler and the guidance layer, decode with the VAE.

import Foundation
import SDModels
import SDTensor

/// A loaded Stable Diffusion 1.x/2.x model. Immutable and `Sendable`: one instance can serve
/// several generations on different threads.
public struct StableDiffusionPipeline: Sendable {
  /// The CLIP tokenizer of the model (its `tokenizer/` folder, or the bundled SD 1.x one).
  public let tokenizer: CLIPTokenizer
  public private(set) var textEncoder: CLIPTextModel
  public private(set) var unet: UNet2DConditionModel
  /// The VAE that encodes init images and decodes the final latents.
  public let vae: AutoencoderKL
  /// TAESD, for requests whose `decoder` or `previews` name it (see `withTinyAutoencoder(at:)`).
  public internal(set) var tinyAutoencoder: AutoencoderTiny?
  /// The weights file of `tinyAutoencoder` when it was loaded from a folder (checked for changes
  /// before each use, like the model's own).
  var tinyAutoencoderWeights: WeightStore?
  /// The scheduler settings of the model (`scheduler/scheduler_config.json`).
  public var schedulerConfiguration: SchedulerConfiguration
  /// The sampler the model's scheduler config names (`_class_name`), used when a request names
  /// none; nil when it names a scheduler this runtime does not implement.
  public let defaultSampler: SchedulerKind?

  /// Tensors of the model files that no layer read; empty for a well-formed model. The CLI
  /// prints them as a warning (a leftover means the checkpoint has parts this runtime ignores).
  public let unusedWeights: [String]

  /// The LoRA adapters merged into this pipeline's weights, in order (see `applying(_:)`).
  public private(set) var adapters: [ScaledLoRA] = []
  /// Keys of those adapters that named no layer and were skipped (`ignoringUnknownLayers`).
  public private(set) var ignoredLoRAKeys: [String] = []

  /// The weight stores of a pipeline loaded from files, so that each model's file pages can be
  /// dropped when its phase of a generation ends; nil when assembled from loaded parts.
  var weightStores: (text: WeightStore, unet: WeightStore, vae: WeightStore)?

  /// Assembles a pipeline from loaded parts.
  public init(
    tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, unet: UNet2DConditionModel,
    vae: AutoencoderKL, schedulerConfiguration: SchedulerConfiguration,
    defaultSampler: SchedulerKind?
  ) throws(PipelineError) {
    try Self.checkWidths(textEncoder, unet)
    self.tokenizer = tokenizer
    self.textEncoder = textEncoder
    self.unet = unet
    self.vae = vae
    self.schedulerConfiguration = schedulerConfiguration
    self.defaultSampler = defaultSampler
    unusedWeights = []
    weightStores = nil
  }

  /// Loads a model from
  /// - a diffusers folder (`text_encoder/`, `tokenizer/`, `unet/`, `vae/`, `scheduler/`; fp32 or
  ///   fp16 safetensors, also the `*.fp16.safetensors` variant), or
  /// - an SD 1.x single-file checkpoint in the original layout (`v1-5-pruned-emaonly.safetensors`),
  ///   with SD 1.5's configurations, or those of the diffusers folder `configurationsFrom`.
  /// Without `tokenizer/` the bundled CLIP vocabulary is used; without `scheduler/`, SD 1.5's PNDM.
  /// With `halfPrecisionWeights` the UNet, VAE and text-encoder layer weights stay in half
  /// precision in memory (half the memory; widened on each use; fp32 checkpoints are rounded).
  /// Weights stored in the precision they are kept in (fp32 files without, fp16 files with
  /// `halfPrecisionWeights`) are used where they lie in the file's memory mapping, without a
  /// copy: each generation drops a model's pages from resident memory when its phase ends, so a
  /// 512×512 generation never holds all three models at once (the pages come back from the page
  /// cache at the next use). Do not rewrite the checkpoint files in place while such a pipeline
  /// exists; replacing them (a new file renamed over the old) is safe.
  /// - Throws: `PipelineError` naming the file that is missing or wrong; pickle checkpoints
  ///   (`.ckpt`, `.pt`, `.bin`) are refused, since loading them can run code.
  public init(
    modelAt url: URL, configurationsFrom configurationFolder: URL? = nil,
    halfPrecisionWeights: Bool = false
  ) throws(PipelineError) {
    let folder: ModelFolder
    do {
      folder = try ModelFolder(
        at: url, configurationsFrom: configurationFolder,
        halfPrecisionWeights: halfPrecisionWeights)
      tokenizer = folder.tokenizer
      textEncoder = try folder.loadTextEncoder()
      unet = try folder.loadUNet()
      vae = try folder.loadVAE()
    } catch {
      throw .model(error)
    }
    if let file = folder.schedulerConfigurationFile {
      schedulerConfiguration = try SchedulerConfiguration(contentsOf: file)
      // A class this runtime lacks leaves no default: a request must name its sampler.
      defaultSampler =
        schedulerConfiguration.kind ?? (schedulerConfiguration.className == nil ? .pndm : nil)
    } else {
      schedulerConfiguration = .stableDiffusion15
      defaultSampler = .pndm
    }
    unusedWeights = folder.unusedWeights()
    weightStores = (folder.textEncoder.weights, folder.unet.weights, folder.vae.weights)
    try Self.checkWidths(textEncoder, unet)
  }

  /// This pipeline with `adapters` merged into the UNet and text-encoder layers they update,
  /// W' = W + scale · (α / r) · up · down. Only the touched layers are copied (in the precision
  /// the weights are kept in); the others, and this pipeline, stay as they are, so several
  /// variants can share one loaded model.
  /// - Throws: `PipelineError.model(.invalidLoRA)` naming the file and key of an update that
  ///   names no layer (unless `ignoringUnknownLayers`) or does not fit it; `.invalidArgument` for
  ///   a pipeline assembled from parts (it has no weight stores to rebuild from).
  public func applying(_ adapters: [ScaledLoRA], ignoringUnknownLayers: Bool = false)
    throws(PipelineError) -> StableDiffusionPipeline
  {
    guard let weightStores else {
      throw .invalidArgument(
        name: "adapters", reason: "LoRAs apply to a pipeline loaded from model files")
    }
    guard adapters.allSatisfy({ $0.scale.isFinite }) else {
      throw .invalidArgument(name: "adapters", reason: "LoRA scales must be finite numbers")
    }
    var result = self
    do throws(ModelError) {
      for part in LoRA.Part.allCases {
        let updates = adapters.filter { $0.lora.updates.contains { $0.part == part } }
        guard !updates.isEmpty else { continue }
        if part == .textEncoder2 {
          // SD 1.x/2.x have one text encoder; these updates are for SDXL's second.
          let keys = updates.flatMap { adapter in
            adapter.lora.updates.filter { $0.part == part }.map(\.key)
          }
          guard ignoringUnknownLayers else {
            throw ModelError.invalidLoRA(
              file: updates[0].lora.path, key: keys[0],
              reason: "is for a second text encoder (SDXL); this model has one")
          }
          result.ignoredLoRAKeys += keys
          continue
        }
        let store = part == .unet ? weightStores.unet : weightStores.text
        let merge = try LoRAMerge(
          updates, part: part, into: store, unet: part == .unet ? unet.configuration : nil,
          ignoringUnknownLayers: ignoringUnknownLayers)
        result.ignoredLoRAKeys += merge.unknownKeys
        do throws(WeightError) {
          if part == .unet {
            result.unet = try UNet2DConditionModel(
              configuration: unet.configuration, weights: merge.weights)
            result.weightStores?.unet = merge.weights
          } else {
            result.textEncoder = try CLIPTextModel(
              configuration: textEncoder.configuration, weights: merge.weights)
            result.weightStores?.text = merge.weights
          }
        } catch {
          throw ModelError.weights(error)
        }
      }
    } catch {
      throw .model(error)
    }
    result.adapters += adapters
    return result
  }

  /// The UNet cross-attends to the text encoder's output, so their widths must agree.
  private static func checkWidths(_ textEncoder: CLIPTextModel, _ unet: UNet2DConditionModel)
    throws(PipelineError)
  {
    guard textEncoder.configuration.hiddenSize == unet.configuration.crossAttentionDim else {
      throw .invalidArgument(
        name: "model",
        reason:
          "text encoder width \(textEncoder.configuration.hiddenSize) does not match the UNet's cross_attention_dim \(unet.configuration.crossAttentionDim)"
      )
    }
  }

  /// Pixels per latent along each axis (8 for SD).
  public var vaeScaleFactor: Int { vae.configuration.scaleFactor }

  /// The text embeddings of `prompt` `[1, 77, hidden]` as diffusers computes them (no weights,
  /// cut at 75 tokens), and the tokens that were cut.
  public func encode(prompt: String, clipSkip: Int = 0, options: ComputeOptions) -> (
    Tensor, [String]
  ) {
    let encoded = PromptEncoder(tokenizer: tokenizer, textEncoder: textEncoder).encode(
      prompt, truncate: true, parsesWeights: false, clipSkip: clipSkip, options: options)
    return (encoded.embeddings, encoded.cutTokens)
  }

  /// Runs one generation.
  /// - Parameters:
  ///   - options: threads, and a cancellation flag checked inside every model (between blocks
  ///     and attention query blocks), so a cancel is answered within a fraction of a step.
  ///   - promptCache: encodings shared with other generations on this pipeline (grids,
  ///     batches); nil encodes every prompt afresh.
  ///   - progress: called after every step; return false to cancel.
  /// - Throws: `PipelineError.invalidArgument` for a bad request, `.cancelled` when cancelled.
  public func generate(
    _ request: GenerationRequest, options: ComputeOptions,
    promptCache: PromptEncodingCache? = nil, progress: ((GenerationProgress) -> Bool)? = nil
  ) throws(PipelineError) -> GenerationResult {
    if let padding = request.onlyMaskedPadding {
      return try generateOnlyMasked(
        request, padding: padding, options: options, promptCache: promptCache, progress: progress)
    }
    let factor = vaeScaleFactor
    let width = request.width ?? request.initImage?.width ?? unet.configuration.sampleSize * factor
    let height =
      request.height ?? request.initImage?.height ?? unet.configuration.sampleSize * factor
    try validate(request, width: width, height: height)
    guard let sampler = request.sampler ?? defaultSampler else {
      throw .invalidSchedulerConfiguration(
        file: schedulerConfiguration.file,
        reason:
          "'_class_name' is \(schedulerConfiguration.className ?? "?"), a scheduler this runtime does not implement (it has \(SchedulerKind.classNames.joined(separator: ", "))); choose a sampler"
      )
    }
    var settings = schedulerConfiguration
    if let spacing = request.timestepSpacing { settings.timestepSpacing = spacing }
    var scheduler = try makeScheduler(
      sampler, configuration: settings, steps: request.steps, eta: Double(request.eta),
      schedule: request.schedule)
    let encoder = try PromptEncoder(
      tokenizer: tokenizer, textEncoder: textEncoder, embeddings: request.embeddings)
    try checkUnchanged(weightStores?.text)
    // Full LCM checkpoints take w = scale − 1 as a sinusoidal embedding and run no CFG rows.
    let guidanceCondition = unet.configuration.timeConditionDimension.map {
      guidanceScaleEmbedding([request.guidance.scale - 1], dimension: $0)
    }
    var rowRequest = request
    if guidanceCondition != nil { rowRequest.guidance = request.guidance.withScaleEmbedded }
    let prompts = try EncodedPrompts(
      rowRequest, encoder: encoder, cache: promptCache, options: options)
    let plan = GuidancePlan(rowRequest.guidance, prompts: prompts)
    let rows = max(plan.inside.count, plan.outside.count)
    try requireMemory(
      workingSetBytes(request, width: width, height: height, rows: rows),
      for: "a \(width)x\(height) image with \(rows) UNet row\(rows == 1 ? "" : "s")")
    // Each model's file-backed weights leave resident memory when its phase ends.
    weightStores?.text.releaseResidentPages()

    // Noise: one generator for everything, drawn in diffusers' order (img2img: the VAE sample
    // first, then the initial noise; ancestral samplers: then one draw per step).
    var generator = TorchGenerator(seed: request.seed)
    let latentShape = [1, vae.configuration.latentChannels, height / factor, width / factor]
    // A sample of the VAE's latent distribution of `image`, scaled (one generator draw).
    func encodedSample(_ image: Tensor) throws(PipelineError) -> Tensor {
      try checkUnchanged(weightStores?.vae)
      let (mean, logVariance) = vae.encode(image, options: options)
      if options.isCancelled { throw .cancelled }
      let sample = generator.randn(mean.shape)
      return (mean + logVariance.map { Foundation.exp(0.5 * $0) } * sample)
        * vae.configuration.scalingFactor
    }
    var latents: Tensor
    var firstStep = 0
    var inpainting: InpaintingConditions?
    if let initImage = request.initImage {
      firstStep = scheduler.firstStep(strength: request.strength)
      guard firstStep < scheduler.inferenceSteps else {
        throw .invalidArgument(
          name: "strength",
          reason:
            "\(request.strength) with \(request.steps) steps runs no step (steps × strength rounds down to 0); raise the steps or the strength"
        )
      }
      // diffusers' order of draws: the image's latents (unless an inpainting UNet starts from
      // pure noise), the noise, then the masked image's latents.
      let pureNoise = request.mask != nil && request.strength == 1
      let imageLatents =
        pureNoise && unetTakesMask ? nil : try encodedSample(initImage.tensor)
      let noise = generator.randn(latentShape)
      if let imageLatents, !pureNoise {
        latents = scheduler.addNoise(to: imageLatents, noise: noise, stepIndex: firstStep)
      } else {
        latents = noise * scheduler.initNoiseSigma
      }
      if let mask = request.mask {
        inpainting = InpaintingConditions(
          latentMask: mask.latentMask(factor: factor),
          maskedImageLatents: try encodedSample(
            initImage.tensor * mask.binarized.map { $0 < 0.5 ? 1 : 0 }),
          imageLatents: unetTakesMask ? nil : imageLatents, noise: noise)
      }
    } else {
      latents = generator.randn(latentShape) * scheduler.initNoiseSigma
    }

    let initialLatents = latents
    let timesteps = scheduler.timesteps
    var lastPreview: DecodedLatents?
    for index in firstStep..<timesteps.count {
      let t = timesteps[index]
      let step = index - firstStep + 1
      let rows = plan.batch(atStep: step, of: timesteps.count - firstStep)
      try checkUnchanged(weightStores?.unet)
      let batch = concatenate(Array(repeating: latents, count: rows.count), axis: 0)
      var input = scheduler.scaleModelInput(batch, stepIndex: index)
      if let inpainting, unetTakesMask { input = inpainting.unetInput(input, rows: rows.count) }
      let prediction = unet(
        input, timesteps: Array(repeating: t, count: rows.count), context: rows.context,
        timestepCondition: guidanceCondition.map {
          concatenate(Array(repeating: $0, count: rows.count), axis: 0)
        }, options: options)
      if options.isCancelled { throw .cancelled }
      let guided = plan.guidedPrediction(prediction, of: rows)
      latents = scheduler.step(
        noisePrediction: guided, stepIndex: index, sample: latents, generator: &generator)
      if let inpainting {
        latents = inpainting.blended(latents) { [scheduler] known, noise in
          index + 1 < timesteps.count
            ? scheduler.addNoise(to: known, noise: noise, stepIndex: index + 1) : nil
        }
      }
      // A NaN or infinity never goes away again; stop at once instead of decoding a black image.
      guard latents.scalars.allSatisfy(\.isFinite) else {
        throw .nonFinite(
          stage: "the latents at step \(step) of \(timesteps.count - firstStep)",
          suspects: "the UNet's or text encoder's weights, an embedding, a LoRA or a setting")
      }
      // Previews only when someone sees them; the last one may serve as the final image.
      lastPreview =
        progress == nil ? nil : try preview(of: latents, afterStep: step, request, options: options)
      let report = GenerationProgress(
        step: step, totalSteps: timesteps.count - firstStep, timestep: t, latents: latents,
        noisePrediction: guided, preview: lastPreview?.image)
      if let progress, !progress(report) { throw .cancelled }
    }
    weightStores?.unet.releaseResidentPages()

    let final: DecodedLatents
    if let lastPreview, lastPreview.decoder == request.decoder {
      final = lastPreview
    } else {
      final = try decode(latents, with: request.decoder, request, options: options)
    }
    return GenerationResult(
      image: final.image, initialLatents: initialLatents, latents: latents,
      decoded: final.decoded, sampler: sampler, truncatedTokens: prompts.cutTokens,
      warnings: warnings(for: request))
  }

  /// Throws if a weights file of `store` was cut short or modified since loading: weights used in
  /// place are read from the file again in every phase.
  func checkUnchanged(_ store: WeightStore?) throws(PipelineError) {
    do { try store?.checkFilesUnchanged() } catch { throw .model(.weights(error)) }
  }

  private func validate(_ request: GenerationRequest, width: Int, height: Int) throws(PipelineError)
  {
    let factor = vaeScaleFactor
    for (name, value) in [("width", width), ("height", height)] {
      guard value > 0, value % factor == 0 else {
        throw .invalidArgument(
          name: name, reason: "must be a positive multiple of \(factor), got \(value)")
      }
      guard value <= 4096 else {
        // Without a size in the request it came from the model's UNet config.
        let source =
          (name == "width" ? request.width : request.height) == nil
          ? " (the model's size: sample_size \(unet.configuration.sampleSize) × \(factor) in unet/config.json; give a size)"
          : ""
        throw .invalidArgument(name: name, reason: "at most 4096, got \(value)\(source)")
      }
    }
    guard request.steps > 0, request.steps <= 1000 else {
      throw .invalidArgument(name: "steps", reason: "must be in 1...1000, got \(request.steps)")
    }
    guard request.strength.isFinite, request.strength > 0, request.strength <= 1 else {
      throw .invalidArgument(name: "strength", reason: "must be in (0, 1], got \(request.strength)")
    }
    guard request.clipSkip >= 0, request.clipSkip < textEncoder.layers.count else {
      throw .invalidArgument(
        name: "clipSkip",
        reason: "must be in 0..<\(textEncoder.layers.count), got \(request.clipSkip)")
    }
    for negative in request.negativePrompts where !(negative.weight.isFinite && negative.weight > 0)
    {
      throw .invalidArgument(
        name: "negativePrompts",
        reason: "weight of '\(negative.text)' must be a positive number, got \(negative.weight)")
    }
    try request.guidance.validate()
    // A window that starts after the last step would silently apply nothing.
    for (name, window) in [
      ("negativeSteps", request.guidance.negativeSteps), ("nag.steps", request.guidance.nag.steps),
    ] {
      if let window, window.lowerBound > request.steps {
        throw .invalidArgument(
          name: name,
          reason:
            "\(window.lowerBound)-\(window.upperBound) starts after the last of the \(request.steps) steps"
        )
      }
    }
    if let image = request.initImage, image.width != width || image.height != height {
      throw .invalidArgument(
        name: "initImage",
        reason: "is \(image.width)x\(image.height), the request is \(width)x\(height)")
    }
    try validateInpainting(request)
    try validateDecoders(request)
  }
}

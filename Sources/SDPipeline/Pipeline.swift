// txt2img and img2img, as diffusers' StableDiffusionPipeline and StableDiffusionImg2ImgPipeline
// run them on the CPU: encode prompts, draw noise from the torch-compatible generator, denoise
// with a scheduler and the guidance layer, decode with the VAE.

import Foundation
import SDModels
import SDTensor

/// A loaded Stable Diffusion 1.x/2.x or SDXL model. Immutable and `Sendable`: one instance can serve
/// several generations on different threads.
public struct StableDiffusionPipeline: Sendable {
  /// The CLIP tokenizer of the model (its `tokenizer/` folder, or the bundled SD 1.x one).
  public let tokenizer: CLIPTokenizer
  /// The CLIP text encoder (LoRA-merged layers in a pipeline made by `applying(_:)`).
  public private(set) var textEncoder: CLIPTextModel
  /// SDXL's second text encoder (OpenCLIP ViT-bigG with `text_projection`); nil for SD 1.x/2.x.
  public private(set) var textEncoder2: CLIPTextModel?
  /// SDXL's second tokenizer (pads with "!"); nil for SD 1.x/2.x.
  public let tokenizer2: CLIPTokenizer?
  /// SDXL's `force_zeros_for_empty_prompt`: without a negative prompt the unconditional row is
  /// zeros rather than the encoding of "".
  public let forcesZerosForEmptyPrompt: Bool
  /// The denoising UNet (LoRA-merged layers in a pipeline made by `applying(_:)`).
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
  var weightStores: (text: WeightStore, text2: WeightStore?, unet: WeightStore, vae: WeightStore)?

  /// Assembles a pipeline from loaded parts (SDXL: with its second tokenizer and text encoder).
  public init(
    tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, unet: UNet2DConditionModel,
    vae: AutoencoderKL, schedulerConfiguration: SchedulerConfiguration,
    defaultSampler: SchedulerKind?, tokenizer2: CLIPTokenizer? = nil,
    textEncoder2: CLIPTextModel? = nil, forcesZerosForEmptyPrompt: Bool = false
  ) throws(PipelineError) {
    try Self.checkWidths(textEncoder, textEncoder2, tokenizer2, unet)
    self.tokenizer = tokenizer
    self.textEncoder = textEncoder
    self.tokenizer2 = tokenizer2
    self.textEncoder2 = textEncoder2
    self.forcesZerosForEmptyPrompt = forcesZerosForEmptyPrompt
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
      textEncoder2 = try folder.loadTextEncoder2()
      unet = try folder.loadUNet()
      vae = try folder.loadVAE()
    } catch {
      throw .model(error)
    }
    tokenizer2 = folder.tokenizer2
    forcesZerosForEmptyPrompt = folder.forcesZerosForEmptyPrompt
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
    weightStores = (
      folder.textEncoder.weights, folder.textEncoder2?.weights, folder.unet.weights,
      folder.vae.weights
    )
    try Self.checkWidths(textEncoder, textEncoder2, tokenizer2, unet)
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
        if part == .textEncoder2, weightStores.text2 == nil {
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
        let store =
          switch part {
          case .unet: weightStores.unet
          case .textEncoder: weightStores.text
          case .textEncoder2: weightStores.text2 ?? weightStores.text
          }
        let merge = try LoRAMerge(
          updates, part: part, into: store, unet: part == .unet ? unet.configuration : nil,
          ignoringUnknownLayers: ignoringUnknownLayers)
        result.ignoredLoRAKeys += merge.unknownKeys
        do throws(WeightError) {
          if part == .unet {
            result.unet = try UNet2DConditionModel(
              configuration: unet.configuration, weights: merge.weights)
            result.weightStores?.unet = merge.weights
          } else if part == .textEncoder2, let textEncoder2 {
            result.textEncoder2 = try CLIPTextModel(
              configuration: textEncoder2.configuration, weights: merge.weights)
            result.weightStores?.text2 = merge.weights
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

  /// The UNet cross-attends to the text encoders' joined output, so the widths must agree; an
  /// SDXL UNet also takes the second encoder's pooled embedding.
  private static func checkWidths(
    _ textEncoder: CLIPTextModel, _ textEncoder2: CLIPTextModel?, _ tokenizer2: CLIPTokenizer?,
    _ unet: UNet2DConditionModel
  ) throws(PipelineError) {
    let widths = [textEncoder, textEncoder2].compactMap { $0?.configuration.hiddenSize }
    guard widths.reduce(0, +) == unet.configuration.crossAttentionDim else {
      throw .invalidArgument(
        name: "model",
        reason:
          "text encoder width \(widths.map(String.init).joined(separator: " + ")) does not match the UNet's cross_attention_dim \(unet.configuration.crossAttentionDim)"
      )
    }
    guard (textEncoder2 == nil) == (tokenizer2 == nil) else {
      throw .invalidArgument(name: "model", reason: "a second text encoder needs its tokenizer")
    }
    switch (unet.configuration.textTimeEmbedding, textEncoder2) {
    case (nil, nil): break
    case (let added?, let second?):
      guard let projection = second.textProjection,
        projection.weight.shape[0] == added.pooledWidth
      else {
        throw .invalidArgument(
          name: "model",
          reason:
            "the SDXL UNet takes a pooled embedding of width \(added.pooledWidth); text_encoder_2 has \(second.textProjection.map { "a projection to \($0.weight.shape[0])" } ?? "no text_projection")"
        )
      }
    case (nil, _?):
      throw .invalidArgument(
        name: "model", reason: "text_encoder_2 without an SDXL UNet (addition_embed_type)")
    case (_?, nil):
      throw .invalidArgument(
        name: "model", reason: "an SDXL UNet (addition_embed_type) needs text_encoder_2")
    }
  }

  /// The prompt encoders of this model: one for SD 1.x/2.x; SDXL's two, taking the
  /// penultimate states.
  var promptEncoders: PromptEncoders {
    var parts = [(tokenizer, textEncoder)]
    if let tokenizer2, let textEncoder2 { parts.append((tokenizer2, textEncoder2)) }
    return PromptEncoders(
      parts.map { tokenizer, model in
        var encoder = PromptEncoder(tokenizer: tokenizer, textEncoder: model)
        if textEncoder2 != nil { encoder.output = .penultimate }
        return encoder
      })
  }

  /// `promptEncoders` with `embeddings`, each in the encoder it is for (an SDXL embedding file
  /// holds a `clip_l` and a `clip_g` vector set), or else in those of its width.
  /// - Throws: `PipelineError.invalidArgument` for an embedding no encoder takes.
  func promptEncoders(embeddings: [TextualInversion]) throws(PipelineError) -> PromptEncoders {
    let plain = promptEncoders.encoders
    guard !embeddings.isEmpty else { return PromptEncoders(plain) }
    func uses(_ index: Int, _ embedding: TextualInversion) -> Bool {
      embedding.encoderIndex.map { $0 == index }
        ?? (embedding.vectors.shape[1] == plain[index].textEncoder.configuration.hiddenSize)
    }
    for embedding in embeddings where !plain.indices.contains(where: { uses($0, embedding) }) {
      let widths = plain.map { String($0.textEncoder.configuration.hiddenSize) }
      throw .invalidArgument(
        name: "embedding",
        reason:
          "'\(embedding.name)' has width \(embedding.vectors.shape[1]) for text encoder \(embedding.encoderIndex.map { "\($0 + 1)" } ?? "any"); this model's \(widths.count > 1 ? "are" : "is") \(widths.joined(separator: " and "))"
      )
    }
    var encoders: [PromptEncoder] = []
    for (index, base) in plain.enumerated() {
      var encoder = try PromptEncoder(
        tokenizer: base.tokenizer, textEncoder: base.textEncoder,
        embeddings: embeddings.filter { uses(index, $0) })
      encoder.output = base.output
      encoders.append(encoder)
    }
    return PromptEncoders(encoders)
  }

  /// Pixels per latent along each axis (8 for SD).
  public var vaeScaleFactor: Int { vae.configuration.scaleFactor }

  /// The text embeddings of `prompt` `[1, 77, hidden]` as diffusers computes them (no weights,
  /// cut at 75 tokens), and the tokens that were cut.
  public func encode(prompt: String, clipSkip: Int = 0, options: ComputeOptions) -> (
    Tensor, [String]
  ) {
    let encoded = promptEncoders.encode(
      prompt, truncate: true, parsesWeights: false, clipSkip: clipSkip, options: options)
    return (encoded.embeddings, encoded.cutTokens)
  }

  /// Runs one generation.
  /// - Parameters:
  ///   - request: what to generate.
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
    let encoder = try promptEncoders(embeddings: request.embeddings)
    try checkUnchanged(weightStores?.text)
    try checkUnchanged(weightStores?.text2)
    // Full LCM checkpoints take w = scale − 1 as a sinusoidal embedding and run no CFG rows.
    let guidanceCondition = unet.configuration.timeConditionDimension.map {
      guidanceScaleEmbedding([request.guidance.scale - 1], dimension: $0)
    }
    var rowRequest = request
    if guidanceCondition != nil { rowRequest.guidance = request.guidance.withScaleEmbedded }
    let prompts = try EncodedPrompts(
      rowRequest, encoder: encoder, zerosForEmpty: forcesZerosForEmptyPrompt, cache: promptCache,
      options: options)
    let plan = GuidancePlan(rowRequest.guidance, prompts: prompts)
    let rows = max(plan.inside.count, plan.outside.count)
    try requireMemory(
      workingSetBytes(request, width: width, height: height, rows: rows),
      for: "a \(width)x\(height) image with \(rows) UNet row\(rows == 1 ? "" : "s")")
    // Each model's file-backed weights leave resident memory when its phase ends.
    weightStores?.text.releaseResidentPages()
    weightStores?.text2?.releaseResidentPages()
    // SDXL: every row but the prompt's (the last) takes the negative size conditioning.
    let timeIDs = (
      positive: request.sizeConditioning.timeIDs(width: width, height: height),
      negative: (request.negativeSizeConditioning ?? request.sizeConditioning).timeIDs(
        width: width, height: height)
    )

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
    // Only SDXL UNets take the pooled embedding (a lone encoder may still have a projection).
    let takesPooled = unet.configuration.textTimeEmbedding != nil
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
        },
        added: (takesPooled ? rows.pooled : nil).map {
          AddedConditions(
            textEmbeds: $0,
            timeIDs: Array(repeating: timeIDs.negative, count: rows.count - 1) + [timeIDs.positive])
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
    // SDXL starts from the penultimate layer, so it can skip one layer fewer.
    let skippable = textEncoder.layers.count - (textEncoder2 == nil ? 0 : 1)
    guard request.clipSkip >= 0, request.clipSkip < skippable else {
      throw .invalidArgument(
        name: "clipSkip", reason: "must be in 0..<\(skippable), got \(request.clipSkip)")
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

// What a caller asks of the pipeline, and what it gets back while and after it runs.

import SDTensor

/// One txt2img or img2img request. Defaults follow diffusers' StableDiffusionPipeline except
/// `steps` (20, a common CLI default, instead of 50).
public struct GenerationRequest: Sendable {
  /// What the image should show.
  public var prompt: String
  /// What the image should not show; nil or "" means the empty prompt, as in diffusers.
  public var negativePrompt: String?
  /// Negative-prompt embeddings `[1, 77, hidden]` used instead of `negativePrompt` text.
  public var negativePromptEmbeddings: Tensor?
  /// Denoising steps (model calls may be more for PNDM's first step, as in diffusers).
  public var steps: Int
  /// How the prompts guide the denoising: scale, rescale, rule, negative-step window.
  public var guidance: Guidance
  /// Seed of the torch-compatible generator for the initial (and ancestral) noise.
  public var seed: UInt64
  /// The sampler; nil uses the class named in the model's `scheduler_config.json`.
  public var sampler: SchedulerKind?
  /// How inference timesteps are spread (`timestep_spacing`); nil keeps the model's setting.
  /// SD-Turbo and most few-step models want `.trailing`.
  public var timestepSpacing: TimestepSpacing?
  /// Which σs the σ samplers (Euler, Euler ancestral, LMS, DPM-Solver) step on: the sampler's
  /// own, Karras, or Align Your Steps.
  public var schedule: ScheduleType = .automatic
  /// The sampler's η: TCD's γ (diffusers' `eta` argument, default 0; TCD's authors use 0.3).
  public var eta: Float = 0
  /// Image size in pixels; nil uses the init image's size for img2img, else the model's
  /// native size (UNet sample size × 8).
  public var width: Int?
  /// Image height in pixels; nil as for `width`.
  public var height: Int?
  /// img2img: the starting image (its size is the default width × height; another size is
  /// refused: resize it first).
  public var initImage: RGBImage?
  /// Inpainting: where to repaint `initImage` (its size). nil: img2img of the whole image.
  public var mask: InpaintingMask?
  /// Inpainting in the web UIs' "only masked" mode with this many pixels of padding around the
  /// mask (diffusers' `padding_mask_crop`): the region is generated at `width` × `height`
  /// (default: the model's size) and pasted back through the mask. nil: the whole image.
  public var onlyMaskedPadding: Int?
  /// Inpainting: put the init image's pixels back outside the mask after decoding, blended by
  /// the mask's grey levels (the VAE round trip otherwise changes them slightly).
  public var keepsUnmaskedPixels = false
  /// img2img: how much of the schedule to run, in (0, 1]; 1 ignores the image's content (with
  /// a mask: the repainted region starts from pure noise, as diffusers does).
  public var strength: Float
  /// Skip the last k text-encoder layers (diffusers' `clip_skip`).
  public var clipSkip: Int
  /// More negative prompts with their weights, combined with `negativePrompt` (weight 1) by
  /// `guidance.rule`.
  public var negativePrompts: [NegativePrompt] = []
  /// Cut prompts at 75 tokens (as diffusers does) instead of encoding them in chunks of 75.
  public var truncatePrompts = false
  /// Read `(word:1.3)`, `(word)`, `[word]` weights in prompts; false takes brackets literally.
  public var parsesPromptWeights = true
  /// Latent height or width above which the VAE decodes in overlapping 64×64-latent tiles
  /// (bounded memory for large images; 96 = 768 pixels). nil: never tile.
  public var tiledDecodingAbove: Int? = 96
  /// Textual-inversion embeddings usable by name in the prompts.
  public var embeddings: [TextualInversion] = []
  /// SDXL: the second text encoder's prompt (diffusers' `prompt_2`); nil: `prompt`. Ignored by
  /// SD 1.x/2.x.
  public var prompt2: String?
  /// SDXL: the second text encoder's text for the first negative prompt (diffusers'
  /// `negative_prompt_2`); nil: that prompt's own. Without a negative prompt it is unused, as in
  /// diffusers (the unconditional row is zeros).
  public var negativePrompt2: String?
  /// SDXL: the size conditioning of the prompt's rows (diffusers' `original_size`,
  /// `crops_coords_top_left`, `target_size`); ignored by SD 1.x/2.x.
  public var sizeConditioning = SizeConditioning()
  /// SDXL: the size conditioning of the negative and unconditional rows; nil: the prompt's
  /// (diffusers' `negative_original_size`, `negative_crops_coords_top_left`,
  /// `negative_target_size`).
  public var negativeSizeConditioning: SizeConditioning?
  /// What decodes the final latents: the VAE, or the pipeline's tiny autoencoder (TAESD).
  public var decoder: LatentDecoder = .vae
  /// Previews of the latents handed to the progress callback; nil: none (and no cost).
  public var previews: PreviewSettings?

  /// `negativePrompt` (weight 1) followed by `negativePrompts`.
  public var allNegativePrompts: [NegativePrompt] {
    (negativePrompt.map { [NegativePrompt($0)] } ?? []) + negativePrompts
  }

  /// Every setting, each defaulted as documented on its property (the guidance rule, NAG and
  /// the negative-step window are in `guidance`).
  public init(
    prompt: String, negativePrompt: String? = nil, negativePrompts: [NegativePrompt] = [],
    negativePromptEmbeddings: Tensor? = nil, steps: Int = 20, guidance: Guidance = Guidance(),
    seed: UInt64 = 0, sampler: SchedulerKind? = nil, timestepSpacing: TimestepSpacing? = nil,
    schedule: ScheduleType = .automatic, eta: Float = 0, width: Int? = nil, height: Int? = nil,
    initImage: RGBImage? = nil,
    strength: Float = 0.8, mask: InpaintingMask? = nil, keepsUnmaskedPixels: Bool = false,
    clipSkip: Int = 0, embeddings: [TextualInversion] = [],
    truncatePrompts: Bool = false, parsesPromptWeights: Bool = true,
    tiledDecodingAbove: Int? = 96, decoder: LatentDecoder = .vae, previews: PreviewSettings? = nil
  ) {
    self.prompt = prompt
    self.negativePrompt = negativePrompt
    self.negativePrompts = negativePrompts
    self.negativePromptEmbeddings = negativePromptEmbeddings
    self.steps = steps
    self.guidance = guidance
    self.seed = seed
    self.sampler = sampler
    self.timestepSpacing = timestepSpacing
    self.schedule = schedule
    self.eta = eta
    self.width = width
    self.height = height
    self.initImage = initImage
    self.strength = strength
    self.mask = mask
    self.keepsUnmaskedPixels = keepsUnmaskedPixels
    self.clipSkip = clipSkip
    self.embeddings = embeddings
    self.truncatePrompts = truncatePrompts
    self.parsesPromptWeights = parsesPromptWeights
    self.tiledDecodingAbove = tiledDecodingAbove
    self.decoder = decoder
    self.previews = previews
  }
}

/// Reported after every denoising step. Return `false` from the callback to cancel.
public struct GenerationProgress: Sendable {
  /// 1-based index of the step just finished.
  public var step: Int
  /// Steps in this run.
  public var totalSteps: Int
  /// The timestep the UNet was called at.
  public var timestep: Float
  /// The latents after this step, `[1, 4, h/8, w/8]`.
  public var latents: Tensor
  /// The guided noise prediction the scheduler stepped with.
  public var noisePrediction: Tensor
  /// The latents decoded to a picture, after the steps the request's `previews` ask for; nil
  /// after the others.
  public var preview: RGBImage? = nil
}

/// The outcome of a generation.
public struct GenerationResult: Sendable {
  /// The decoded image.
  public var image: RGBImage
  /// The latents before the first step (noise, or the noised init image for img2img).
  public var initialLatents: Tensor
  /// The final latents, before VAE decoding (scaled as the UNet sees them).
  public var latents: Tensor
  /// The VAE output `[1, 3, H, W]` in about [-1, 1], before conversion to 8 bits.
  public var decoded: Tensor
  /// The sampler that ran.
  public var sampler: SchedulerKind
  /// Tokens that did not fit the 77-token window and were dropped, per prompt (positive,
  /// negative); empty when nothing was cut.
  public var truncatedTokens: (positive: [String], negative: [String])
  /// What in the request acted unseen (see `StableDiffusionPipeline.warnings(for:)`).
  public var warnings: [String] = []
}

/// SDXL's micro-conditioning of one kind of UNet row: the size the training image had, where it
/// was cropped and the size it was shown at. Models trained with it draw smaller or cropped
/// subjects for small `originalSize`s and non-zero crops.
public struct SizeConditioning: Sendable, Equatable {
  /// (width, height) in pixels; nil: the generated image's.
  public var originalSize: (width: Int, height: Int)?
  /// (left, top) crop offset in pixels (0, 0 by default: uncropped).
  public var cropTopLeft: (left: Int, top: Int)
  /// (width, height) in pixels; nil: the generated image's.
  public var targetSize: (width: Int, height: Int)?

  /// Conditioning with these values (the defaults: the image's own size, uncropped).
  public init(
    originalSize: (width: Int, height: Int)? = nil, cropTopLeft: (left: Int, top: Int) = (0, 0),
    targetSize: (width: Int, height: Int)? = nil
  ) {
    self.originalSize = originalSize
    self.cropTopLeft = cropTopLeft
    self.targetSize = targetSize
  }

  /// diffusers' `add_time_ids` for an image of `width` × `height`: original height and width,
  /// crop top and left, target height and width.
  public func timeIDs(width: Int, height: Int) -> [Float] {
    let original = originalSize ?? (width, height)
    let target = targetSize ?? (width, height)
    return [
      original.height, original.width, cropTopLeft.top, cropTopLeft.left, target.height,
      target.width,
    ]
    .map(Float.init)
  }

  /// Equal when every value is.
  public static func == (a: SizeConditioning, b: SizeConditioning) -> Bool {
    a.originalSize?.width == b.originalSize?.width
      && a.originalSize?.height == b.originalSize?.height
      && a.cropTopLeft == b.cropTopLeft && a.targetSize?.width == b.targetSize?.width
      && a.targetSize?.height == b.targetSize?.height
  }
}

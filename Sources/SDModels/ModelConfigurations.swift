// Architecture numbers of each model part, decoded from the diffusers/transformers `config.json`
// of its folder, with presets for the released SD 1.5 and SDXL base checkpoints (used for
// single-file checkpoints that carry no config, and by the benchmark).

import Foundation
import SDTensor

/// The CLIP text encoder's architecture (transformers `CLIPTextConfig`, `text_encoder/config.json`).
public struct CLIPTextConfiguration: Sendable, Equatable {
  /// `vocab_size`: rows of the token embedding (49 408 for CLIP's BPE vocabulary).
  public var vocabularySize: Int
  /// `hidden_size`: width of every token state (768 in SD 1.x, 1024 in SD 2.x).
  public var hiddenSize: Int
  /// `intermediate_size`: width of each layer's MLP (4 × `hiddenSize` in SD).
  public var intermediateSize: Int
  /// `num_hidden_layers`: encoder layers (12 in SD 1.x, 23 in SD 2.x's `text_encoder/`).
  public var layerCount: Int
  /// `num_attention_heads`: heads of each layer's self-attention; divides `hiddenSize`.
  public var headCount: Int
  /// `max_position_embeddings`: rows of the position embedding, the longest token row (77).
  public var maxPositions: Int
  /// `hidden_act`: the MLP's activation.
  public var activation: Activation
  /// `layer_norm_eps`: epsilon of every layer norm (1e-5).
  public var layerNormEps: Float
  /// `projection_dim`: width of `text_projection` in a `CLIPTextModelWithProjection` (SDXL's
  /// second encoder: 1280), whose checkpoint has that key.
  public var projectionWidth: Int = 768

  /// SD 1.x: OpenAI CLIP ViT-L/14's text tower.
  public static let stableDiffusion15 = CLIPTextConfiguration(
    vocabularySize: 49408, hiddenSize: 768, intermediateSize: 3072, layerCount: 12, headCount: 12,
    maxPositions: 77, activation: .quickGELU, layerNormEps: 1e-5)

  /// SDXL base's `text_encoder/` (`stabilityai/stable-diffusion-xl-base-1.0`): the same CLIP
  /// ViT-L/14 text tower as SD 1.x (`projection_dim` 768, unused: it has no projection).
  public static let stableDiffusionXL = CLIPTextConfiguration.stableDiffusion15

  /// SDXL base's `text_encoder_2/`: OpenCLIP ViT-bigG/14's text tower as transformers'
  /// `CLIPTextModelWithProjection` (1280 wide, 32 layers of 20 heads, GELU, a 1280 projection).
  public static let stableDiffusionXLTextEncoder2: CLIPTextConfiguration = {
    var configuration = CLIPTextConfiguration(
      vocabularySize: 49408, hiddenSize: 1280, intermediateSize: 5120, layerCount: 32,
      headCount: 20, maxPositions: 77, activation: .gelu, layerNormEps: 1e-5)
    configuration.projectionWidth = 1280
    return configuration
  }()

  /// A configuration of exactly these values, not checked as `init(contentsOf:)` checks a file
  /// (the presets are built so).
  public init(
    vocabularySize: Int, hiddenSize: Int, intermediateSize: Int, layerCount: Int, headCount: Int,
    maxPositions: Int, activation: Activation, layerNormEps: Float
  ) {
    self.vocabularySize = vocabularySize
    self.hiddenSize = hiddenSize
    self.intermediateSize = intermediateSize
    self.layerCount = layerCount
    self.headCount = headCount
    self.maxPositions = maxPositions
    self.activation = activation
    self.layerNormEps = layerNormEps
  }

  /// Decodes `config.json` of a transformers CLIPTextModel.
  /// - Throws: `ModelError.invalidConfiguration` naming the file and field.
  public init(contentsOf url: URL) throws(ModelError) {
    let config = try ConfigReader(contentsOf: url)
    // A full CLIPModel config nests the text part; accept both.
    let reader = config.json["text_config"].map { ConfigReader(json: $0, file: url.path) } ?? config
    vocabularySize = try reader.int("vocab_size", default: 49408)
    hiddenSize = try reader.int("hidden_size", default: 512)
    intermediateSize = try reader.int("intermediate_size", default: 2048)
    layerCount = try reader.int("num_hidden_layers", default: 12)
    headCount = try reader.int("num_attention_heads", default: 8)
    projectionWidth = try reader.int("projection_dim", default: 512)
    maxPositions = try reader.int("max_position_embeddings", default: 77)
    let name = try reader.string("hidden_act", default: "quick_gelu")
    guard let activation = Activation(configName: name) else {
      throw reader.fail("hidden_act", "one of quick_gelu, gelu, gelu_new (found \(name))")
    }
    self.activation = activation
    layerNormEps = try reader.positiveFloat("layer_norm_eps", default: 1e-5)
    guard hiddenSize % headCount == 0 else {
      throw reader.fail("num_attention_heads", "a divisor of hidden_size \(hiddenSize)")
    }
  }
}

/// The denoising UNet's architecture (diffusers `UNet2DConditionModel`, `unet/config.json`).
public struct UNetConfiguration: Sendable, Equatable {
  /// `in_channels`: channels of the noisy latents (4; 9 for inpainting UNets, which also take
  /// the masked image's latents and the mask).
  public var inChannels: Int
  /// `out_channels`: channels of the prediction (4).
  public var outChannels: Int
  /// `block_out_channels`: channels of each down block, shallowest first ([320, 640, 1280, 1280]).
  public var blockOutChannels: [Int]
  /// `layers_per_block`: resnets per down block; each up block has one more.
  public var layersPerBlock: Int
  /// true for `CrossAttnDownBlock2D`, false for `DownBlock2D`, per down block.
  public var downBlockHasAttention: [Bool]
  /// true for `CrossAttnUpBlock2D`, false for `UpBlock2D`, per up block.
  public var upBlockHasAttention: [Bool]
  /// `cross_attention_dim`: width of the text states the UNet attends to (768 in SD 1.x, 1024 in
  /// SD 2.x).
  public var crossAttentionDim: Int
  /// Attention heads per down block (diffusers' `attention_head_dim` is really a head count for
  /// SD 1.x/2.x configs; `num_attention_heads` wins when given).
  public var headCounts: [Int]
  /// `use_linear_projection`: the transformers' proj_in/proj_out are linear layers (SD 2.x)
  /// rather than 1×1 convolutions.
  public var useLinearProjection: Bool
  /// `upcast_attention` (true in SD 2.1): diffusers computes attention in Float32 for fp16
  /// models; read but unused here, where attention always runs in Float32.
  public var upcastAttention: Bool
  /// `norm_num_groups`: groups of every group norm (32).
  public var normGroups: Int
  /// `norm_eps`: epsilon of the resnets' and `conv_norm_out`'s group norms (1e-5); the
  /// transformers' group norms use 1e-6.
  public var normEps: Float
  /// `flip_sin_to_cos`: the timestep embedding puts the cosines first (true in SD).
  public var flipSinToCos: Bool
  /// `freq_shift`: diffusers' `downscale_freq_shift` of the timestep embedding's frequencies (0
  /// in SD).
  public var freqShift: Float
  /// `transformer_layers_per_block`: `BasicTransformerBlock`s in each `Transformer2DModel` of
  /// each down block (1 in SD; [1, 2, 10] in SDXL); the mid block takes the last count, the up
  /// blocks the counts in reverse.
  public var transformerLayersPerBlock: [Int]
  /// `addition_embed_type: "text_time"` (SDXL): the time embedding also receives the pooled
  /// text embedding and the six micro-conditioning numbers; nil for SD 1.x/2.x.
  public var textTimeEmbedding: TextTimeEmbeddingConfiguration? = nil
  /// `time_cond_proj_dim`: width of the guidance-scale embedding that full LCM checkpoints
  /// (LCM_Dreamshaper_v7 and the like) add to the time embedding; nil for other UNets.
  public var timeConditionDimension: Int? = nil
  /// `sample_size`: the latent height and width trained on (64 = 512 pixels; 96 for 768-pixel
  /// SD 2.x models).
  public var sampleSize: Int

  /// Width of the time embedding: 4 × the first block's channels.
  public var timeEmbeddingChannels: Int { 4 * blockOutChannels[0] }

  /// SD 1.5 as released (`runwayml/stable-diffusion-v1-5`, `unet/config.json`).
  public static let stableDiffusion15 = UNetConfiguration(
    inChannels: 4, outChannels: 4, blockOutChannels: [320, 640, 1280, 1280], layersPerBlock: 2,
    downBlockHasAttention: [true, true, true, false],
    upBlockHasAttention: [false, true, true, true],
    crossAttentionDim: 768, headCounts: [8, 8, 8, 8], useLinearProjection: false,
    upcastAttention: false, normGroups: 32, normEps: 1e-5, flipSinToCos: true, freqShift: 0,
    transformerLayersPerBlock: [1, 1, 1, 1], sampleSize: 64)

  /// SDXL base as released (`stabilityai/stable-diffusion-xl-base-1.0`, `unet/config.json`):
  /// three levels, no attention at the first, 1/2/10 transformer layers, linear projections,
  /// 2048-wide text states (both encoders side by side) and the text_time added embedding.
  public static let stableDiffusionXL: UNetConfiguration = {
    var configuration = UNetConfiguration(
      inChannels: 4, outChannels: 4, blockOutChannels: [320, 640, 1280], layersPerBlock: 2,
      downBlockHasAttention: [false, true, true], upBlockHasAttention: [true, true, false],
      crossAttentionDim: 2048, headCounts: [5, 10, 20], useLinearProjection: true,
      upcastAttention: false, normGroups: 32, normEps: 1e-5, flipSinToCos: true, freqShift: 0,
      transformerLayersPerBlock: [1, 2, 10], sampleSize: 128)
    configuration.textTimeEmbedding = .stableDiffusionXL
    return configuration
  }()

  /// A configuration of exactly these values, not checked as `init(contentsOf:)` checks a file
  /// (the presets are built so).
  public init(
    inChannels: Int, outChannels: Int, blockOutChannels: [Int], layersPerBlock: Int,
    downBlockHasAttention: [Bool], upBlockHasAttention: [Bool], crossAttentionDim: Int,
    headCounts: [Int], useLinearProjection: Bool, upcastAttention: Bool, normGroups: Int,
    normEps: Float, flipSinToCos: Bool, freqShift: Float, transformerLayersPerBlock: [Int],
    sampleSize: Int
  ) {
    self.inChannels = inChannels
    self.outChannels = outChannels
    self.blockOutChannels = blockOutChannels
    self.layersPerBlock = layersPerBlock
    self.downBlockHasAttention = downBlockHasAttention
    self.upBlockHasAttention = upBlockHasAttention
    self.crossAttentionDim = crossAttentionDim
    self.headCounts = headCounts
    self.useLinearProjection = useLinearProjection
    self.upcastAttention = upcastAttention
    self.normGroups = normGroups
    self.normEps = normEps
    self.flipSinToCos = flipSinToCos
    self.freqShift = freqShift
    self.transformerLayersPerBlock = transformerLayersPerBlock
    self.sampleSize = sampleSize
  }

  /// Decodes `unet/config.json`. Only what SD 1.x/2.x use is supported; other features (class
  /// embeddings, SDXL's added conditions) are refused by name rather than ignored.
  /// - Throws: `ModelError.invalidConfiguration` naming the file and field.
  public init(contentsOf url: URL) throws(ModelError) {
    let reader = try ConfigReader(contentsOf: url)
    inChannels = try reader.int("in_channels", default: 4)
    outChannels = try reader.int("out_channels", default: 4)
    blockOutChannels = try reader.ints(
      "block_out_channels", count: reader.json["block_out_channels"]?.arrayValue?.count ?? 4,
      default: [320, 640, 1280, 1280])
    let blocks = blockOutChannels.count
    layersPerBlock = try reader.int("layers_per_block", default: 2)
    let down = try reader.strings(
      "down_block_types",
      default: [
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D",
      ])
    let up = try reader.strings(
      "up_block_types",
      default: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    for (key, types) in [("down_block_types", down), ("up_block_types", up)]
    where types.count != blocks {
      throw reader.fail(key, "as long as block_out_channels (\(blocks))")
    }
    downBlockHasAttention = try down.map { name throws(ModelError) in
      switch name {
      case "CrossAttnDownBlock2D": return true
      case "DownBlock2D": return false
      default:
        throw reader.fail("down_block_types", "CrossAttnDownBlock2D or DownBlock2D (found \(name))")
      }
    }
    upBlockHasAttention = try up.map { name throws(ModelError) in
      switch name {
      case "CrossAttnUpBlock2D": return true
      case "UpBlock2D": return false
      default:
        throw reader.fail("up_block_types", "CrossAttnUpBlock2D or UpBlock2D (found \(name))")
      }
    }
    let mid = try reader.string("mid_block_type", default: "UNetMidBlock2DCrossAttn")
    guard mid == "UNetMidBlock2DCrossAttn" else {
      throw reader.fail("mid_block_type", "UNetMidBlock2DCrossAttn (found \(mid))")
    }
    for unsupported in [
      "class_embed_type", "encoder_hid_dim", "reverse_transformer_layers_per_block",
    ]
    where reader.has(unsupported) {
      throw .invalidConfiguration(
        file: reader.file,
        reason: "'\(unsupported)' is not supported (SD 1.x/2.x and SDXL UNets only)")
    }
    crossAttentionDim = try reader.int("cross_attention_dim", default: 1280)
    if reader.has("num_attention_heads") {
      headCounts = try reader.ints("num_attention_heads", count: blocks, default: nil)
    } else {
      headCounts = try reader.ints(
        "attention_head_dim", count: blocks, default: Array(repeating: 8, count: blocks))
    }
    useLinearProjection = try reader.bool("use_linear_projection", default: false)
    upcastAttention = try reader.bool("upcast_attention", default: false)
    normGroups = try reader.int("norm_num_groups", default: 32)
    normEps = try reader.positiveFloat("norm_eps", default: 1e-5)
    flipSinToCos = try reader.bool("flip_sin_to_cos", default: true)
    freqShift = try reader.float("freq_shift", default: 0)
    transformerLayersPerBlock = try reader.ints(
      "transformer_layers_per_block", count: blocks, default: Array(repeating: 1, count: blocks))
    if let type = try reader.string("addition_embed_type", oneOf: ["text_time"]) {
      let width = try reader.int("addition_time_embed_dim", default: 256)
      let input = try reader.int("projection_class_embeddings_input_dim", default: nil)
      guard input > 6 * width else {
        throw reader.fail(
          "projection_class_embeddings_input_dim", "above 6 × addition_time_embed_dim for \(type)")
      }
      textTimeEmbedding = TextTimeEmbeddingConfiguration(
        timeEmbeddingWidth: width, inputWidth: input)
    }
    sampleSize = try reader.int("sample_size", default: 64)
    timeConditionDimension = try reader.int("time_cond_proj_dim", in: 1...65_536)
    for (index, channels) in blockOutChannels.enumerated() {
      guard channels % normGroups == 0, channels % headCounts[index] == 0 else {
        throw reader.fail("block_out_channels", "divisible by norm_num_groups and the head count")
      }
    }
  }
}

/// SDXL's added conditioning (`addition_embed_type: "text_time"`): sinusoids of the six
/// micro-conditioning numbers (original size, crop, target size) next to the pooled text
/// embedding, through a two-layer MLP into the time embedding.
public struct TextTimeEmbeddingConfiguration: Sendable, Equatable {
  /// `addition_time_embed_dim`: sinusoid width per number (256 in SDXL).
  public var timeEmbeddingWidth: Int
  /// `projection_class_embeddings_input_dim`: pooled width + 6 × `timeEmbeddingWidth` (2816).
  public var inputWidth: Int
  /// The pooled text embedding's width: `inputWidth` − 6 × `timeEmbeddingWidth` (1280).
  public var pooledWidth: Int { inputWidth - 6 * timeEmbeddingWidth }

  /// SDXL base's values: 256 per number, 2816 in all.
  public static let stableDiffusionXL = TextTimeEmbeddingConfiguration(
    timeEmbeddingWidth: 256, inputWidth: 2816)

  /// The added embedding of these widths.
  public init(timeEmbeddingWidth: Int, inputWidth: Int) {
    self.timeEmbeddingWidth = timeEmbeddingWidth
    self.inputWidth = inputWidth
  }
}

/// The VAE's architecture (diffusers `AutoencoderKL`, `vae/config.json`).
public struct AutoencoderConfiguration: Sendable, Equatable {
  /// `in_channels`: channels of the images the encoder takes (3, RGB).
  public var inChannels: Int
  /// `out_channels`: channels of the images the decoder returns (3, RGB).
  public var outChannels: Int
  /// `latent_channels`: channels of the latents (4).
  public var latentChannels: Int
  /// `block_out_channels`: channels of each encoder block, shallowest first ([128, 256, 512,
  /// 512]); the decoder runs them in reverse.
  public var blockOutChannels: [Int]
  /// `layers_per_block`: resnets per encoder block; each decoder block has one more.
  public var layersPerBlock: Int
  /// `norm_num_groups`: groups of every group norm (32; their epsilon is 1e-6).
  public var normGroups: Int
  /// Latents are multiplied by this after encoding and divided by it before decoding.
  public var scalingFactor: Float
  /// `use_quant_conv`: the encoder ends with the 1×1 `quant_conv` (true in SD).
  public var useQuantConv: Bool
  /// `use_post_quant_conv`: the decoder starts with the 1×1 `post_quant_conv` (true in SD).
  public var usePostQuantConv: Bool
  /// `mid_block_add_attention`: the mid blocks have their self-attention (true in SD).
  public var midBlockAddAttention: Bool

  /// Pixels per latent along each axis: 2^(blocks − 1), 8 for SD.
  public var scaleFactor: Int { 1 << (blockOutChannels.count - 1) }

  /// SD 1.x/2.x's VAE as released.
  public static let stableDiffusion15 = AutoencoderConfiguration(
    inChannels: 3, outChannels: 3, latentChannels: 4, blockOutChannels: [128, 256, 512, 512],
    layersPerBlock: 2, normGroups: 32, scalingFactor: 0.18215, useQuantConv: true,
    usePostQuantConv: true, midBlockAddAttention: true)

  /// SDXL base's VAE (`vae/config.json`): SD's architecture, retrained, with latents scaled by
  /// 0.13025.
  public static let stableDiffusionXL: AutoencoderConfiguration = {
    var configuration = AutoencoderConfiguration.stableDiffusion15
    configuration.scalingFactor = 0.13025
    return configuration
  }()

  /// A configuration of exactly these values, not checked as `init(contentsOf:)` checks a file
  /// (the presets are built so).
  public init(
    inChannels: Int, outChannels: Int, latentChannels: Int, blockOutChannels: [Int],
    layersPerBlock: Int, normGroups: Int, scalingFactor: Float, useQuantConv: Bool,
    usePostQuantConv: Bool, midBlockAddAttention: Bool
  ) {
    self.inChannels = inChannels
    self.outChannels = outChannels
    self.latentChannels = latentChannels
    self.blockOutChannels = blockOutChannels
    self.layersPerBlock = layersPerBlock
    self.normGroups = normGroups
    self.scalingFactor = scalingFactor
    self.useQuantConv = useQuantConv
    self.usePostQuantConv = usePostQuantConv
    self.midBlockAddAttention = midBlockAddAttention
  }

  /// Decodes `vae/config.json`.
  /// - Throws: `ModelError.invalidConfiguration` naming the file and field.
  public init(contentsOf url: URL) throws(ModelError) {
    let reader = try ConfigReader(contentsOf: url)
    inChannels = try reader.int("in_channels", default: 3)
    outChannels = try reader.int("out_channels", default: 3)
    latentChannels = try reader.int("latent_channels", default: 4)
    blockOutChannels = try reader.ints(
      "block_out_channels", count: reader.json["block_out_channels"]?.arrayValue?.count ?? 1,
      default: [64])
    layersPerBlock = try reader.int("layers_per_block", default: 1)
    normGroups = try reader.int("norm_num_groups", default: 32)
    scalingFactor = try reader.positiveFloat("scaling_factor", default: 0.18215)
    useQuantConv = try reader.bool("use_quant_conv", default: true)
    usePostQuantConv = try reader.bool("use_post_quant_conv", default: true)
    midBlockAddAttention = try reader.bool("mid_block_add_attention", default: true)
    let blocks = blockOutChannels.count
    for (key, expected) in [
      ("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D"),
    ] {
      let types = try reader.strings(key, default: Array(repeating: expected, count: blocks))
      guard types.count == blocks, types.allSatisfy({ $0 == expected }) else {
        throw reader.fail(key, "\(blocks) × \(expected)")
      }
    }
    guard blockOutChannels.allSatisfy({ $0 % normGroups == 0 }) else {
      throw reader.fail("block_out_channels", "divisible by norm_num_groups \(normGroups)")
    }
  }
}

// Architecture numbers of each model part, decoded from the diffusers/transformers `config.json`
// of its folder, with presets for the released SD 1.5 checkpoint (used for single-file
// checkpoints that carry no config, and by the benchmark).

import Foundation
import SDTensor

/// The CLIP text encoder's architecture (transformers `CLIPTextConfig`, `text_encoder/config.json`).
public struct CLIPTextConfiguration: Sendable, Equatable {
  public var vocabularySize: Int
  public var hiddenSize: Int
  public var intermediateSize: Int
  public var layerCount: Int
  public var headCount: Int
  public var maxPositions: Int
  public var activation: Activation
  public var layerNormEps: Float

  /// SD 1.x: OpenAI CLIP ViT-L/14's text tower.
  public static let stableDiffusion15 = CLIPTextConfiguration(
    vocabularySize: 49408, hiddenSize: 768, intermediateSize: 3072, layerCount: 12, headCount: 12,
    maxPositions: 77, activation: .quickGELU, layerNormEps: 1e-5)

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
  public var inChannels: Int
  public var outChannels: Int
  public var blockOutChannels: [Int]
  public var layersPerBlock: Int
  /// true for `CrossAttnDownBlock2D`, false for `DownBlock2D`, per down block.
  public var downBlockHasAttention: [Bool]
  /// true for `CrossAttnUpBlock2D`, false for `UpBlock2D`, per up block.
  public var upBlockHasAttention: [Bool]
  public var crossAttentionDim: Int
  /// Attention heads per down block (diffusers' `attention_head_dim` is really a head count for
  /// SD 1.x/2.x configs; `num_attention_heads` wins when given).
  public var headCounts: [Int]
  public var useLinearProjection: Bool
  public var upcastAttention: Bool
  public var normGroups: Int
  public var normEps: Float
  public var flipSinToCos: Bool
  public var freqShift: Float
  public var transformerLayersPerBlock: Int
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
    transformerLayersPerBlock: 1, sampleSize: 64)

  public init(
    inChannels: Int, outChannels: Int, blockOutChannels: [Int], layersPerBlock: Int,
    downBlockHasAttention: [Bool], upBlockHasAttention: [Bool], crossAttentionDim: Int,
    headCounts: [Int], useLinearProjection: Bool, upcastAttention: Bool, normGroups: Int,
    normEps: Float, flipSinToCos: Bool, freqShift: Float, transformerLayersPerBlock: Int,
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
    guard down.count == blocks, up.count == blocks else {
      throw reader.fail("down_block_types", "as long as block_out_channels (\(blocks))")
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
      "class_embed_type", "addition_embed_type", "encoder_hid_dim", "time_cond_proj_dim",
    ]
    where reader.has(unsupported) {
      throw .invalidConfiguration(
        file: reader.file, reason: "'\(unsupported)' is not supported (SD 1.x/2.x UNets only)")
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
    transformerLayersPerBlock = try reader.int("transformer_layers_per_block", default: 1)
    sampleSize = try reader.int("sample_size", default: 64)
    for (index, channels) in blockOutChannels.enumerated() {
      guard channels % normGroups == 0, channels % headCounts[index] == 0 else {
        throw reader.fail("block_out_channels", "divisible by norm_num_groups and the head count")
      }
    }
  }
}

/// The VAE's architecture (diffusers `AutoencoderKL`, `vae/config.json`).
public struct AutoencoderConfiguration: Sendable, Equatable {
  public var inChannels: Int
  public var outChannels: Int
  public var latentChannels: Int
  public var blockOutChannels: [Int]
  public var layersPerBlock: Int
  public var normGroups: Int
  /// Latents are multiplied by this after encoding and divided by it before decoding.
  public var scalingFactor: Float
  public var useQuantConv: Bool
  public var usePostQuantConv: Bool
  public var midBlockAddAttention: Bool

  /// Pixels per latent along each axis: 2^(blocks − 1), 8 for SD.
  public var scaleFactor: Int { 1 << (blockOutChannels.count - 1) }

  /// SD 1.x/2.x's VAE as released.
  public static let stableDiffusion15 = AutoencoderConfiguration(
    inChannels: 3, outChannels: 3, latentChannels: 4, blockOutChannels: [128, 256, 512, 512],
    layersPerBlock: 2, normGroups: 32, scalingFactor: 0.18215, useQuantConv: true,
    usePostQuantConv: true, midBlockAddAttention: true)

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

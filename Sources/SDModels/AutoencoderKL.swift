// The VAE, mirroring diffusers' `AutoencoderKL` (models/autoencoders/autoencoder_kl.py and
// vae.py: `Encoder`, `Decoder`), the `vae/` folder of a checkpoint. Latents are 1/8 the image
// size for SD; every group norm here uses eps 1e-6 (diffusers' VAE blocks).

import Foundation
import SDTensor

/// The VAE's group-norm epsilon (diffusers `Encoder`/`Decoder` pass resnet_eps=1e-6).
private let vaeEps: Float = 1e-6

/// The mid block's single-head self-attention over the h·w positions (diffusers `Attention`
/// with `group_norm`, `residual_connection=True`, projection biases).
public struct VAEAttention: Sendable {
  public let groupNorm: GroupNorm
  public let attention: Attention

  init(_ store: WeightStore, _ key: String, channels: Int, groups: Int) throws(WeightError) {
    groupNorm = try GroupNorm(
      store, "\(key).group_norm", groups: groups, channels: channels, eps: vaeEps)
    attention = try Attention(
      store, key, queryDim: channels, heads: 1, headDim: channels, projectionBias: true)
  }

  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let tokens = groupNorm(x, options: options).reshaped([n, c, h * w]).transposedLastTwo()
    var out = attention(tokens, options: options).transposedLastTwo().reshaped([n, c, h, w])
    out.add(x)
    return out
  }
}

/// `UNetMidBlock2D` of the VAE: resnet, attention, resnet (no time embedding).
public struct VAEMidBlock: Sendable {
  public let resnets: [ResnetBlock2D]
  public let attention: VAEAttention?

  init(_ store: WeightStore, _ key: String, channels: Int, groups: Int, addAttention: Bool)
    throws(WeightError)
  {
    resnets = [
      try ResnetBlock2D(
        store, "\(key).resnets.0", in: channels, out: channels, timeEmbeddingChannels: nil,
        groups: groups, eps: vaeEps),
      try ResnetBlock2D(
        store, "\(key).resnets.1", in: channels, out: channels, timeEmbeddingChannels: nil,
        groups: groups, eps: vaeEps),
    ]
    attention =
      addAttention
      ? try VAEAttention(store, "\(key).attentions.0", channels: channels, groups: groups) : nil
  }

  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = resnets[0](x, timeEmbedding: nil, options: options)
    if let attention { hidden = attention(hidden, options: options) }
    return resnets[1](hidden, timeEmbedding: nil, options: options)
  }
}

/// `DownEncoderBlock2D` or `UpDecoderBlock2D`: resnets, then an optional down- or upsampler.
public struct VAEBlock: Sendable {
  public let resnets: [ResnetBlock2D]
  public let downsampler: Downsample2D?
  public let upsampler: Upsample2D?

  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = x
    for resnet in resnets { hidden = resnet(hidden, timeEmbedding: nil, options: options) }
    if let downsampler { hidden = downsampler(hidden, options: options) }
    if let upsampler { hidden = upsampler(hidden, options: options) }
    return hidden
  }
}

/// The encoder half: image `[n, 3, H, W]` -> moments `[n, 2·latent, H/8, W/8]` (after quant_conv).
public struct VAEEncoder: Sendable {
  public let convIn: Conv2D
  public let downBlocks: [VAEBlock]
  public let midBlock: VAEMidBlock
  public let convNormOut: GroupNorm
  public let convOut: Conv2D
  public let quantConv: Conv2D?

  init(_ store: WeightStore, _ config: AutoencoderConfiguration) throws(WeightError) {
    let channels = config.blockOutChannels
    let groups = config.normGroups
    convIn = try Conv2D(
      store, "encoder.conv_in", in: config.inChannels, out: channels[0], kernel: 3, padding: 1)
    var blocks: [VAEBlock] = []
    var outputChannels = channels[0]
    for index in channels.indices {
      let inputChannels = outputChannels
      outputChannels = channels[index]
      let key = "encoder.down_blocks.\(index)"
      var resnets: [ResnetBlock2D] = []
      for layer in 0..<config.layersPerBlock {
        resnets.append(
          try ResnetBlock2D(
            store, "\(key).resnets.\(layer)", in: layer == 0 ? inputChannels : outputChannels,
            out: outputChannels, timeEmbeddingChannels: nil, groups: groups, eps: vaeEps))
      }
      let isFinal = index == channels.count - 1
      blocks.append(
        VAEBlock(
          resnets: resnets,
          downsampler: isFinal
            ? nil
            : try Downsample2D(
              store, "\(key).downsamplers.0", channels: outputChannels, padsRightAndBottomOnly: true
            ),
          upsampler: nil))
    }
    downBlocks = blocks
    let last = channels[channels.count - 1]
    midBlock = try VAEMidBlock(
      store, "encoder.mid_block", channels: last, groups: groups,
      addAttention: config.midBlockAddAttention)
    convNormOut = try GroupNorm(
      store, "encoder.conv_norm_out", groups: groups, channels: last, eps: vaeEps)
    let moments = 2 * config.latentChannels
    convOut = try Conv2D(store, "encoder.conv_out", in: last, out: moments, kernel: 3, padding: 1)
    quantConv =
      config.useQuantConv
      ? try Conv2D(store, "quant_conv", in: moments, out: moments, kernel: 1) : nil
  }

  public func callAsFunction(
    _ image: Tensor, options: ComputeOptions, observer: UNet2DConditionModel.Observer? = nil
  ) -> Tensor {
    var hidden = convIn(image, options: options)
    for block in downBlocks { hidden = block(hidden, options: options) }
    hidden = midBlock(hidden, options: options)
    observer?("encoder.mid_block", hidden)
    hidden = convOut(convNormOut(hidden, activation: .silu, options: options), options: options)
    return quantConv.map { $0(hidden, options: options) } ?? hidden
  }
}

/// The decoder half: latents `[n, latent, h, w]` (already divided by the scaling factor) ->
/// image `[n, 3, 8h, 8w]` in about [-1, 1].
public struct VAEDecoder: Sendable {
  public let postQuantConv: Conv2D?
  public let convIn: Conv2D
  public let midBlock: VAEMidBlock
  public let upBlocks: [VAEBlock]
  public let convNormOut: GroupNorm
  public let convOut: Conv2D

  init(_ store: WeightStore, _ config: AutoencoderConfiguration) throws(WeightError) {
    let channels = config.blockOutChannels
    let groups = config.normGroups
    let latent = config.latentChannels
    postQuantConv =
      config.usePostQuantConv
      ? try Conv2D(store, "post_quant_conv", in: latent, out: latent, kernel: 1) : nil
    let last = channels[channels.count - 1]
    convIn = try Conv2D(store, "decoder.conv_in", in: latent, out: last, kernel: 3, padding: 1)
    midBlock = try VAEMidBlock(
      store, "decoder.mid_block", channels: last, groups: groups,
      addAttention: config.midBlockAddAttention)
    let reversedChannels = Array(channels.reversed())
    var blocks: [VAEBlock] = []
    var outputChannels = reversedChannels[0]
    for index in reversedChannels.indices {
      let previousOutput = outputChannels
      outputChannels = reversedChannels[index]
      let key = "decoder.up_blocks.\(index)"
      var resnets: [ResnetBlock2D] = []
      for layer in 0...config.layersPerBlock {
        resnets.append(
          try ResnetBlock2D(
            store, "\(key).resnets.\(layer)", in: layer == 0 ? previousOutput : outputChannels,
            out: outputChannels, timeEmbeddingChannels: nil, groups: groups, eps: vaeEps))
      }
      let isFinal = index == channels.count - 1
      blocks.append(
        VAEBlock(
          resnets: resnets, downsampler: nil,
          upsampler: isFinal
            ? nil : try Upsample2D(store, "\(key).upsamplers.0", channels: outputChannels)))
    }
    upBlocks = blocks
    convNormOut = try GroupNorm(
      store, "decoder.conv_norm_out", groups: groups, channels: channels[0], eps: vaeEps)
    convOut = try Conv2D(
      store, "decoder.conv_out", in: channels[0], out: config.outChannels, kernel: 3, padding: 1)
  }

  public func callAsFunction(
    _ latents: Tensor, options: ComputeOptions, observer: UNet2DConditionModel.Observer? = nil
  ) -> Tensor {
    var hidden = postQuantConv.map { $0(latents, options: options) } ?? latents
    hidden = convIn(hidden, options: options)
    observer?("conv_in", hidden)
    hidden = midBlock(hidden, options: options)
    observer?("mid_block", hidden)
    for (index, block) in upBlocks.enumerated() {
      hidden = block(hidden, options: options)
      observer?("up_blocks.\(index)", hidden)
    }
    return convOut(convNormOut(hidden, activation: .silu, options: options), options: options)
  }
}

/// The KL autoencoder: encodes images to latent distributions and decodes latents to images.
public struct AutoencoderKL: Sendable {
  public let configuration: AutoencoderConfiguration
  public let encoder: VAEEncoder
  public let decoder: VAEDecoder

  /// Builds encoder and decoder from `store` by diffusers key.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  public init(configuration: AutoencoderConfiguration, weights store: WeightStore)
    throws(WeightError)
  {
    self.configuration = configuration
    encoder = try VAEEncoder(store, configuration)
    decoder = try VAEDecoder(store, configuration)
  }

  /// Loads `config.json` and `diffusion_pytorch_model.safetensors` (or `.fp16`) from `vae/`.
  /// - Throws: `ModelError` for a bad config, missing file, or weights that do not fit.
  public init(directory: URL) throws(ModelError) {
    let config = try AutoencoderConfiguration(
      contentsOf: directory.appendingPathComponent("config.json"))
    let store = try WeightStore.open(directory: directory, stem: "diffusion_pytorch_model")
    do { try self.init(configuration: config, weights: store) } catch { throw .weights(error) }
  }

  /// The diagonal Gaussian the encoder predicts for an image in [-1, 1] `[n, 3, H, W]`:
  /// mean and log-variance `[n, latent, H/8, W/8]`, log-variance clamped to [-30, 20] as diffusers.
  public func encode(_ image: Tensor, options: ComputeOptions) -> (
    mean: Tensor, logVariance: Tensor
  ) {
    let moments = encoder(image, options: options)
    let parts = chunk(moments, 2, axis: 1)
    return (parts[0], parts[1].map { Swift.min(20, Swift.max(-30, $0)) })
  }

  /// Decodes latents (already divided by `scalingFactor`) -> image `[n, 3, 8h, 8w]`.
  public func decode(_ latents: Tensor, options: ComputeOptions) -> Tensor {
    decoder(latents, options: options)
  }
}

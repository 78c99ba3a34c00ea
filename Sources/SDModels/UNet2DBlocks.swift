// The blocks of diffusers' models/unets/unet_2d_blocks.py that SD uses, each built from its
// model's configuration and its index: the UNet's `CrossAttnDownBlock2D`/`DownBlock2D`,
// `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`, and the VAE's
// `DownEncoderBlock2D`, `UNetMidBlock2D`, `UpDecoderBlock2D`. Keys are diffusers' own
// (`down_blocks.1.attentions.0`), so a layer is found by its checkpoint name.

import SDTensor

/// `CrossAttnDownBlock2D`, or `DownBlock2D` when the configuration gives the block no attention:
/// resnets (each followed by a `Transformer2DModel` in the cross-attention form), then a
/// downsampler except in the last block.
public struct DownBlock2D: Sendable {
  /// `resnets.<j>`: `layersPerBlock` of them; the first takes the previous block's channels.
  public let resnets: [ResnetBlock2D]
  /// One `Transformer2DModel` per resnet; empty for `DownBlock2D`.
  public let attentions: [Transformer2DModel]
  /// `downsamplers.0` (3×3, stride 2, padding 1); nil in the last block.
  public let downsampler: Downsample2D?

  /// Reads `down_blocks.<index>` of a UNet of `configuration`.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  init(_ store: WeightStore, index: Int, configuration config: UNetConfiguration)
    throws(WeightError)
  {
    let key = "down_blocks.\(index)"
    let channels = config.blockOutChannels
    let (inChannels, outChannels) = (channels[max(0, index - 1)], channels[index])
    resnets = try ResnetBlock2D.stack(
      store, key,
      inputs: [inChannels] + Array(repeating: outChannels, count: config.layersPerBlock - 1),
      out: outChannels, timeEmbeddingChannels: config.timeEmbeddingChannels,
      groups: config.normGroups, eps: config.normEps)
    attentions =
      config.downBlockHasAttention[index]
      ? try Transformer2DModel.stack(
        store, key, count: config.layersPerBlock, channels: outChannels,
        heads: config.headCounts[index], layers: config.transformerLayersPerBlock[index],
        configuration: config) : []
    downsampler =
      index == channels.count - 1
      ? nil
      : try Downsample2D(
        store, "\(key).downsamplers.0", channels: outChannels, padsRightAndBottomOnly: false)
  }

  /// Returns the block output and the skip states it hands to the up path (one per resnet, plus
  /// the downsampled state).
  func callAsFunction(
    _ x: Tensor, timeEmbedding: Tensor, context: CrossAttentionContext, options: ComputeOptions
  ) -> (Tensor, [Tensor]) {
    var hidden = x
    var skips: [Tensor] = []
    for (index, resnet) in resnets.enumerated() {
      hidden = resnet(hidden, timeEmbedding: timeEmbedding, options: options)
      if !attentions.isEmpty {
        hidden = attentions[index](hidden, context: context, options: options)
      }
      skips.append(hidden)
    }
    if let downsampler {
      hidden = downsampler(hidden, options: options)
      skips.append(hidden)
    }
    return (hidden, skips)
  }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) pairs, at the deepest level.
public struct UNetMidBlock2DCrossAttn: Sendable {
  /// `resnets.0` and `resnets.1`, at the deepest level's channels.
  public let resnets: [ResnetBlock2D]
  /// `attentions.0`, between the two resnets.
  public let attentions: [Transformer2DModel]

  /// Reads `mid_block` of a UNet of `configuration`.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  init(_ store: WeightStore, configuration config: UNetConfiguration) throws(WeightError) {
    let channels = config.blockOutChannels[config.blockOutChannels.count - 1]
    resnets = try ResnetBlock2D.stack(
      store, "mid_block", inputs: [channels, channels], out: channels,
      timeEmbeddingChannels: config.timeEmbeddingChannels, groups: config.normGroups,
      eps: config.normEps)
    attentions = try Transformer2DModel.stack(
      store, "mid_block", count: 1, channels: channels,
      heads: config.headCounts[config.headCounts.count - 1],
      layers: config.transformerLayersPerBlock[config.transformerLayersPerBlock.count - 1],
      configuration: config)
  }

  func callAsFunction(
    _ x: Tensor, timeEmbedding: Tensor, context: CrossAttentionContext, options: ComputeOptions
  ) -> Tensor {
    var hidden = resnets[0](x, timeEmbedding: timeEmbedding, options: options)
    for (attention, resnet) in zip(attentions, resnets.dropFirst()) {
      hidden = attention(hidden, context: context, options: options)
      hidden = resnet(hidden, timeEmbedding: timeEmbedding, options: options)
    }
    return hidden
  }
}

/// `CrossAttnUpBlock2D`, or `UpBlock2D` without attention: each resnet takes the previous output
/// concatenated with a skip state along channels; an upsampler follows except in the last block.
public struct UpBlock2D: Sendable {
  /// `resnets.<j>`: `layersPerBlock + 1` of them, each taking its input concatenated with a
  /// skip state.
  public let resnets: [ResnetBlock2D]
  /// One `Transformer2DModel` per resnet; empty for `UpBlock2D`.
  public let attentions: [Transformer2DModel]
  /// `upsamplers.0`; nil in the last block.
  public let upsampler: Upsample2D?

  /// Reads `up_blocks.<index>` of a UNet of `configuration` (block 0 is the deepest).
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  init(_ store: WeightStore, index: Int, configuration config: UNetConfiguration)
    throws(WeightError)
  {
    let key = "up_blocks.\(index)"
    let channels = Array(config.blockOutChannels.reversed())
    let outChannels = channels[index]
    let previousOutput = channels[max(0, index - 1)]
    // The last resnet's skip comes from the down block below, which has fewer channels.
    let lastSkip = channels[min(index + 1, channels.count - 1)]
    let layers = config.layersPerBlock + 1
    let inputs = (0..<layers).map { layer in
      (layer == 0 ? previousOutput : outChannels) + (layer == layers - 1 ? lastSkip : outChannels)
    }
    resnets = try ResnetBlock2D.stack(
      store, key, inputs: inputs, out: outChannels,
      timeEmbeddingChannels: config.timeEmbeddingChannels, groups: config.normGroups,
      eps: config.normEps)
    attentions =
      config.upBlockHasAttention[index]
      ? try Transformer2DModel.stack(
        store, key, count: layers, channels: outChannels,
        heads: Array(config.headCounts.reversed())[index],
        layers: Array(config.transformerLayersPerBlock.reversed())[index], configuration: config)
      : []
    upsampler =
      index == channels.count - 1
      ? nil : try Upsample2D(store, "\(key).upsamplers.0", channels: outChannels)
  }

  /// `skips` are consumed from the end; `upsampleSize` is the spatial size of the next skip
  /// state (diffusers' `upsample_size`, which matters for latents not divisible by 2^depth).
  func callAsFunction(
    _ x: Tensor, skips: inout [Tensor], timeEmbedding: Tensor, context: CrossAttentionContext,
    upsampleSize: (Int, Int)?, options: ComputeOptions
  ) -> Tensor {
    var hidden = x
    for (index, resnet) in resnets.enumerated() {
      let skip = skips.removeLast()
      hidden = resnet(
        concatenate([hidden, skip], axis: 1), timeEmbedding: timeEmbedding, options: options)
      if !attentions.isEmpty {
        hidden = attentions[index](hidden, context: context, options: options)
      }
    }
    if let upsampler { hidden = upsampler(hidden, size: upsampleSize, options: options) }
    return hidden
  }
}

/// The VAE's group-norm epsilon (diffusers `Encoder`/`Decoder` pass resnet_eps=1e-6).
let vaeEps: Float = 1e-6

/// `DownEncoderBlock2D` of the VAE encoder: resnets, then a downsampler that pads only right and
/// bottom, except in the last block.
public struct DownEncoderBlock2D: Sendable {
  /// `resnets.<j>`: `layersPerBlock` of them, without time embedding.
  public let resnets: [ResnetBlock2D]
  /// `downsamplers.0` (padded right and bottom only); nil in the last block.
  public let downsampler: Downsample2D?

  /// Reads `encoder.down_blocks.<index>` of a VAE of `configuration`.
  init(_ store: WeightStore, index: Int, configuration config: AutoencoderConfiguration)
    throws(WeightError)
  {
    let key = "encoder.down_blocks.\(index)"
    let channels = config.blockOutChannels
    let (inChannels, outChannels) = (channels[max(0, index - 1)], channels[index])
    resnets = try ResnetBlock2D.stack(
      store, key,
      inputs: [inChannels] + Array(repeating: outChannels, count: config.layersPerBlock - 1),
      out: outChannels, timeEmbeddingChannels: nil, groups: config.normGroups, eps: vaeEps)
    downsampler =
      index == channels.count - 1
      ? nil
      : try Downsample2D(
        store, "\(key).downsamplers.0", channels: outChannels, padsRightAndBottomOnly: true)
  }

  /// The resnets, then the downsampler: `[n, in, h, w]` -> `[n, out, h/2, w/2]`, or
  /// `[n, out, h, w]` in the last block.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = x
    for resnet in resnets { hidden = resnet(hidden, timeEmbedding: nil, options: options) }
    return downsampler.map { $0(hidden, options: options) } ?? hidden
  }
}

/// `UpDecoderBlock2D` of the VAE decoder: one more resnet than the encoder's blocks, then an
/// upsampler except in the last block (block 0 is the deepest).
public struct UpDecoderBlock2D: Sendable {
  /// `resnets.<j>`: `layersPerBlock + 1` of them, without time embedding.
  public let resnets: [ResnetBlock2D]
  /// `upsamplers.0`; nil in the last block.
  public let upsampler: Upsample2D?

  /// Reads `decoder.up_blocks.<index>` of a VAE of `configuration`.
  init(_ store: WeightStore, index: Int, configuration config: AutoencoderConfiguration)
    throws(WeightError)
  {
    let key = "decoder.up_blocks.\(index)"
    let channels = Array(config.blockOutChannels.reversed())
    let (inChannels, outChannels) = (channels[max(0, index - 1)], channels[index])
    resnets = try ResnetBlock2D.stack(
      store, key,
      inputs: [inChannels] + Array(repeating: outChannels, count: config.layersPerBlock),
      out: outChannels, timeEmbeddingChannels: nil, groups: config.normGroups, eps: vaeEps)
    upsampler =
      index == channels.count - 1
      ? nil : try Upsample2D(store, "\(key).upsamplers.0", channels: outChannels)
  }

  /// The resnets, then the upsampler: `[n, in, h, w]` -> `[n, out, 2h, 2w]`, or
  /// `[n, out, h, w]` in the last block.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = x
    for resnet in resnets { hidden = resnet(hidden, timeEmbedding: nil, options: options) }
    return upsampler.map { $0(hidden, options: options) } ?? hidden
  }
}

/// `UNetMidBlock2D` of the VAE: resnet, attention, resnet (no time embedding).
public struct UNetMidBlock2D: Sendable {
  /// `resnets.0` and `resnets.1`, at the deepest level's channels.
  public let resnets: [ResnetBlock2D]
  /// `attentions.0`, between the two resnets; nil when `midBlockAddAttention` is false.
  public let attention: VAEAttention?

  /// Reads `<part>.mid_block` (`encoder` or `decoder`) of a VAE of `configuration`.
  init(_ store: WeightStore, _ key: String, configuration config: AutoencoderConfiguration)
    throws(WeightError)
  {
    let channels = config.blockOutChannels[config.blockOutChannels.count - 1]
    resnets = try ResnetBlock2D.stack(
      store, key, inputs: [channels, channels], out: channels, timeEmbeddingChannels: nil,
      groups: config.normGroups, eps: vaeEps)
    attention =
      config.midBlockAddAttention
      ? try VAEAttention(
        store, "\(key).attentions.0", channels: channels, groups: config.normGroups) : nil
  }

  /// Resnet, attention, resnet on `[n, c, h, w]`; same shape.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = resnets[0](x, timeEmbedding: nil, options: options)
    if let attention { hidden = attention(hidden, options: options) }
    return resnets[1](hidden, timeEmbedding: nil, options: options)
  }
}

/// The VAE mid block's single-head self-attention over the h·w positions (diffusers `Attention`
/// with `group_norm`, `residual_connection=True`, projection biases).
public struct VAEAttention: Sendable {
  /// `group_norm`: eps 1e-6, before the attention.
  public let groupNorm: GroupNorm
  /// `to_q`, `to_k`, `to_v`, `to_out.0` of one head of `channels`, with biases.
  public let attention: Attention

  init(_ store: WeightStore, _ key: String, channels: Int, groups: Int) throws(WeightError) {
    groupNorm = try GroupNorm(
      store, "\(key).group_norm", groups: groups, channels: channels, eps: vaeEps)
    attention = try Attention(
      store, key, queryDim: channels, heads: 1, headDim: channels, projectionBias: true)
  }

  /// Attention over the h·w positions of `x` `[n, c, h, w]`, plus `x`; same shape.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let normed = groupNorm(x, options: options).reshaped([n, c, h * w])
    let attended = attention(normed.transposedLastTwo(options: options), options: options)
    var out = attended.transposedLastTwo(options: options).reshaped([n, c, h, w])
    out.add(x)
    return out
  }
}

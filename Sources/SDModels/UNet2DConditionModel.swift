// The denoising UNet, mirroring diffusers' `UNet2DConditionModel`
// (models/unets/unet_2d_condition.py and unet_2d_blocks.py), the `unet/` folder of a checkpoint.
// SD 1.x and 2.x configurations go through the same code.

import Foundation
import SDTensor

/// A down block: `CrossAttnDownBlock2D` (with `attentions`) or `DownBlock2D` (without).
public struct UNetDownBlock: Sendable {
  public let resnets: [ResnetBlock2D]
  /// One `Transformer2DModel` per resnet, or empty for `DownBlock2D`.
  public let attentions: [Transformer2DModel]
  public let downsampler: Downsample2D?

  /// Returns the block output and the skip states it hands to the up path (one per resnet, plus
  /// the downsampled state).
  func callAsFunction(
    _ x: Tensor, timeEmbedding: Tensor, context: Tensor, options: ComputeOptions
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

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) pairs.
public struct UNetMidBlock2DCrossAttn: Sendable {
  public let resnets: [ResnetBlock2D]
  public let attentions: [Transformer2DModel]

  func callAsFunction(
    _ x: Tensor, timeEmbedding: Tensor, context: Tensor, options: ComputeOptions
  ) -> Tensor {
    var hidden = resnets[0](x, timeEmbedding: timeEmbedding, options: options)
    for (attention, resnet) in zip(attentions, resnets.dropFirst()) {
      hidden = attention(hidden, context: context, options: options)
      hidden = resnet(hidden, timeEmbedding: timeEmbedding, options: options)
    }
    return hidden
  }
}

/// An up block: `CrossAttnUpBlock2D` (with `attentions`) or `UpBlock2D` (without). Each resnet
/// takes the previous output concatenated with a skip state along channels.
public struct UNetUpBlock: Sendable {
  public let resnets: [ResnetBlock2D]
  public let attentions: [Transformer2DModel]
  public let upsampler: Upsample2D?

  /// `skips` are consumed from the end; `upsampleSize` is the spatial size of the next skip
  /// state (diffusers' `upsample_size`, which matters for latents not divisible by 2^depth).
  func callAsFunction(
    _ x: Tensor, skips: inout [Tensor], timeEmbedding: Tensor, context: Tensor,
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

/// The conditional denoising UNet: noisy latents `[b, in, h, w]`, timesteps `[b]` and text
/// embeddings `[b, tokens, crossAttentionDim]` -> predicted noise (or v) `[b, out, h, w]`.
public struct UNet2DConditionModel: Sendable {
  public let configuration: UNetConfiguration
  /// `time_embedding.linear_1`, `time_embedding.linear_2` (SiLU between).
  public let timeEmbeddingLinear1: Linear
  public let timeEmbeddingLinear2: Linear
  public let convIn: Conv2D
  public let downBlocks: [UNetDownBlock]
  public let midBlock: UNetMidBlock2DCrossAttn
  public let upBlocks: [UNetUpBlock]
  public let convNormOut: GroupNorm
  public let convOut: Conv2D

  /// Builds the UNet from `store` by diffusers key.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  public init(configuration config: UNetConfiguration, weights store: WeightStore)
    throws(WeightError)
  {
    configuration = config
    let channels = config.blockOutChannels
    let timeChannels = 4 * channels[0]
    let groups = config.normGroups
    let eps = config.normEps
    timeEmbeddingLinear1 = try Linear(
      store, "time_embedding.linear_1", in: channels[0], out: timeChannels)
    timeEmbeddingLinear2 = try Linear(
      store, "time_embedding.linear_2", in: timeChannels, out: timeChannels)
    convIn = try Conv2D(
      store, "conv_in", in: config.inChannels, out: channels[0], kernel: 3, padding: 1)

    func transformer(_ key: String, channels: Int, heads: Int) throws(WeightError)
      -> Transformer2DModel
    {
      try Transformer2DModel(
        store, key, channels: channels, heads: heads, contextDim: config.crossAttentionDim,
        layers: config.transformerLayersPerBlock, linearProjection: config.useLinearProjection,
        groups: groups)
    }
    func resnet(_ key: String, in inChannels: Int, out outChannels: Int) throws(WeightError)
      -> ResnetBlock2D
    {
      try ResnetBlock2D(
        store, key, in: inChannels, out: outChannels, timeEmbeddingChannels: timeChannels,
        groups: groups, eps: eps)
    }

    var down: [UNetDownBlock] = []
    var outputChannels = channels[0]
    for (index, hasAttention) in config.downBlockHasAttention.enumerated() {
      let inputChannels = outputChannels
      outputChannels = channels[index]
      let key = "down_blocks.\(index)"
      var resnets: [ResnetBlock2D] = []
      var attentions: [Transformer2DModel] = []
      for layer in 0..<config.layersPerBlock {
        resnets.append(
          try resnet(
            "\(key).resnets.\(layer)", in: layer == 0 ? inputChannels : outputChannels,
            out: outputChannels))
        if hasAttention {
          attentions.append(
            try transformer(
              "\(key).attentions.\(layer)", channels: outputChannels,
              heads: config.headCounts[index]))
        }
      }
      let isFinal = index == channels.count - 1
      down.append(
        UNetDownBlock(
          resnets: resnets, attentions: attentions,
          downsampler: isFinal
            ? nil
            : try Downsample2D(
              store, "\(key).downsamplers.0", channels: outputChannels,
              padsRightAndBottomOnly: false)))
    }
    downBlocks = down

    let last = channels[channels.count - 1]
    midBlock = UNetMidBlock2DCrossAttn(
      resnets: [
        try resnet("mid_block.resnets.0", in: last, out: last),
        try resnet("mid_block.resnets.1", in: last, out: last),
      ],
      attentions: [
        try transformer(
          "mid_block.attentions.0", channels: last, heads: config.headCounts[channels.count - 1])
      ])

    var up: [UNetUpBlock] = []
    let reversedChannels = Array(channels.reversed())
    let reversedHeads = Array(config.headCounts.reversed())
    outputChannels = reversedChannels[0]
    for (index, hasAttention) in config.upBlockHasAttention.enumerated() {
      let previousOutput = outputChannels
      outputChannels = reversedChannels[index]
      let inputChannels = reversedChannels[min(index + 1, channels.count - 1)]
      let key = "up_blocks.\(index)"
      let layers = config.layersPerBlock + 1
      var resnets: [ResnetBlock2D] = []
      var attentions: [Transformer2DModel] = []
      for layer in 0..<layers {
        let skipChannels = layer == layers - 1 ? inputChannels : outputChannels
        let resnetInput = layer == 0 ? previousOutput : outputChannels
        resnets.append(
          try resnet("\(key).resnets.\(layer)", in: resnetInput + skipChannels, out: outputChannels)
        )
        if hasAttention {
          attentions.append(
            try transformer(
              "\(key).attentions.\(layer)", channels: outputChannels, heads: reversedHeads[index]))
        }
      }
      let isFinal = index == channels.count - 1
      up.append(
        UNetUpBlock(
          resnets: resnets, attentions: attentions,
          upsampler: isFinal
            ? nil : try Upsample2D(store, "\(key).upsamplers.0", channels: outputChannels)))
    }
    upBlocks = up
    convNormOut = try GroupNorm(
      store, "conv_norm_out", groups: groups, channels: channels[0], eps: eps)
    convOut = try Conv2D(
      store, "conv_out", in: channels[0], out: config.outChannels, kernel: 3, padding: 1)
  }

  /// Loads `config.json` and `diffusion_pytorch_model.safetensors` (or `.fp16`) from `unet/`.
  /// - Throws: `ModelError` for a bad config, missing file, or weights that do not fit.
  public init(directory: URL) throws(ModelError) {
    let config = try UNetConfiguration(contentsOf: directory.appendingPathComponent("config.json"))
    let store = try WeightStore.open(directory: directory, stem: "diffusion_pytorch_model")
    do { try self.init(configuration: config, weights: store) } catch { throw .weights(error) }
  }

  /// Receives intermediate outputs by their diffusers module name (`time_embedding`, `conv_in`,
  /// `down_blocks.0`, ..., `mid_block`, `up_blocks.0`, ...), for reference checks that locate
  /// where a port diverges.
  public typealias Observer = (_ name: String, _ value: Tensor) -> Void

  /// The time embedding MLP applied to sinusoidal embeddings of `timesteps` -> `[b, 4·c0]`.
  public func embedTimesteps(_ timesteps: [Float], options: ComputeOptions) -> Tensor {
    let sinusoids = timestepEmbedding(
      timesteps, dimension: configuration.blockOutChannels[0],
      flipSinToCos: configuration.flipSinToCos, downscaleFreqShift: configuration.freqShift)
    return timeEmbeddingLinear2(
      activate(timeEmbeddingLinear1(sinusoids, options: options), .silu, options: options),
      options: options)
  }

  /// Predicts noise for `sample` `[b, in, h, w]` at per-item `timesteps` (`b` values) given
  /// `context` `[b, tokens, crossAttentionDim]` -> `[b, out, h, w]`. Batch items are
  /// independent, so the guidance layer runs negative and positive prompts in one call.
  public func callAsFunction(
    _ sample: Tensor, timesteps: [Float], context: Tensor, options: ComputeOptions,
    observer: Observer? = nil
  ) -> Tensor {
    precondition(
      sample.shape[0] == timesteps.count && context.shape[0] == sample.shape[0],
      "UNet batch: sample \(sample.shape), \(timesteps.count) timesteps, context \(context.shape)")
    let timeEmbedding = embedTimesteps(timesteps, options: options)
    observer?("time_embedding", timeEmbedding)
    var hidden = convIn(sample, options: options)
    observer?("conv_in", hidden)
    var skips = [hidden]
    for (index, block) in downBlocks.enumerated() {
      let (output, states) = block(
        hidden, timeEmbedding: timeEmbedding, context: context, options: options)
      hidden = output
      skips.append(contentsOf: states)
      observer?("down_blocks.\(index)", hidden)
    }
    hidden = midBlock(hidden, timeEmbedding: timeEmbedding, context: context, options: options)
    observer?("mid_block", hidden)
    for (index, block) in upBlocks.enumerated() {
      // After this block consumes its skips, the next skip on the stack has the size to reach.
      let remaining = skips.count - block.resnets.count
      let upsampleSize =
        remaining > 0 ? (skips[remaining - 1].shape[2], skips[remaining - 1].shape[3]) : nil
      hidden = block(
        hidden, skips: &skips, timeEmbedding: timeEmbedding, context: context,
        upsampleSize: upsampleSize, options: options)
      observer?("up_blocks.\(index)", hidden)
    }
    return convOut(convNormOut(hidden, activation: .silu, options: options), options: options)
  }
}

// The denoising UNet, mirroring diffusers' `UNet2DConditionModel`
// (models/unets/unet_2d_condition.py and unet_2d_blocks.py), the `unet/` folder of a checkpoint.
// SD 1.x and 2.x configurations go through the same code.

import Foundation
import SDTensor

/// The conditional denoising UNet: noisy latents `[b, in, h, w]`, timesteps `[b]` and text
/// embeddings `[b, tokens, crossAttentionDim]` -> predicted noise (or v) `[b, out, h, w]`.
public struct UNet2DConditionModel: Sendable {
  /// The architecture it was built with (`unet/config.json`).
  public let configuration: UNetConfiguration
  /// `time_embedding.linear_1`, `time_embedding.linear_2` (SiLU between).
  public let timeEmbeddingLinear1: Linear
  /// `time_embedding.linear_2`: 4·c0 -> 4·c0, the time embedding every resnet receives.
  public let timeEmbeddingLinear2: Linear
  /// `time_embedding.cond_proj` (no bias): the guidance-scale embedding of full LCM
  /// checkpoints -> the sinusoids' width, added before `timeEmbeddingLinear1`; nil for UNets
  /// without `time_cond_proj_dim`.
  public let timeConditionProjection: Linear?
  /// `add_embedding.linear_1`, `add_embedding.linear_2` (SiLU between): SDXL's pooled text
  /// embedding and micro-conditioning sinusoids -> the time embedding's width; nil without
  /// `addition_embed_type`.
  public let addedEmbedding: (linear1: Linear, linear2: Linear)?
  /// `conv_in`: 3×3, `inChannels` (4, or 9 for inpainting models) -> the first block's channels.
  public let convIn: Conv2D
  /// `down_blocks.<i>`, one per `blockOutChannels` entry; all but the last halve the size.
  public let downBlocks: [DownBlock2D]
  /// `mid_block`: resnet, transformer, resnet at the deepest level.
  public let midBlock: UNetMidBlock2DCrossAttn
  /// `up_blocks.<i>`, deepest first, consuming the down path's skip states.
  public let upBlocks: [UpBlock2D]
  /// `conv_norm_out`: group norm (SiLU follows) before `convOut`.
  public let convNormOut: GroupNorm
  /// `conv_out`: 3×3, the first block's channels -> `outChannels`.
  public let convOut: Conv2D

  /// Builds the UNet from `store` by diffusers key.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  public init(configuration config: UNetConfiguration, weights store: WeightStore)
    throws(WeightError)
  {
    configuration = config
    let channels = config.blockOutChannels
    timeEmbeddingLinear1 = try Linear(
      store, "time_embedding.linear_1", in: channels[0], out: config.timeEmbeddingChannels)
    timeEmbeddingLinear2 = try Linear(
      store, "time_embedding.linear_2", in: config.timeEmbeddingChannels,
      out: config.timeEmbeddingChannels)
    timeConditionProjection = try config.timeConditionDimension.map {
      dimension throws(WeightError) in
      try Linear(
        store, "time_embedding.cond_proj", in: dimension, out: channels[0], bias: false)
    }
    addedEmbedding = try config.textTimeEmbedding.map { added throws(WeightError) in
      (
        try Linear(
          store, "add_embedding.linear_1", in: added.inputWidth, out: config.timeEmbeddingChannels),
        try Linear(
          store, "add_embedding.linear_2", in: config.timeEmbeddingChannels,
          out: config.timeEmbeddingChannels)
      )
    }
    convIn = try Conv2D(
      store, "conv_in", in: config.inChannels, out: channels[0], kernel: 3, padding: 1)
    var down: [DownBlock2D] = []
    for index in channels.indices {
      down.append(try DownBlock2D(store, index: index, configuration: config))
    }
    downBlocks = down
    midBlock = try UNetMidBlock2DCrossAttn(store, configuration: config)
    var up: [UpBlock2D] = []
    for index in channels.indices {
      up.append(try UpBlock2D(store, index: index, configuration: config))
    }
    upBlocks = up
    convNormOut = try GroupNorm(
      store, "conv_norm_out", groups: config.normGroups, channels: channels[0],
      eps: config.normEps)
    convOut = try Conv2D(
      store, "conv_out", in: channels[0], out: config.outChannels, kernel: 3, padding: 1)
  }

  /// Receives intermediate outputs by their diffusers module name (`time_embedding`, `conv_in`,
  /// `down_blocks.0`, ..., `mid_block`, `up_blocks.0`, ...), for reference checks that locate
  /// where a port diverges.
  public typealias Observer = (_ name: String, _ value: Tensor) -> Void

  /// The time embedding MLP applied to sinusoidal embeddings of `timesteps` -> `[b, 4·c0]`;
  /// `condition` `[b, timeConditionDimension]` (LCM's guidance-scale embedding) is projected and
  /// added to the sinusoids first, as diffusers' `TimestepEmbedding` does.
  public func embedTimesteps(
    _ timesteps: [Float], condition: Tensor? = nil, options: ComputeOptions
  ) -> Tensor {
    var sinusoids = timestepEmbedding(
      timesteps, dimension: configuration.blockOutChannels[0],
      flipSinToCos: configuration.flipSinToCos, downscaleFreqShift: configuration.freqShift)
    if let condition, let timeConditionProjection {
      sinusoids = sinusoids + timeConditionProjection(condition, options: options)
    }
    return timeEmbeddingLinear2(
      activate(timeEmbeddingLinear1(sinusoids, options: options), .silu, options: options),
      options: options)
  }

  /// SDXL's added embedding (diffusers' `added_cond_kwargs` through `add_time_proj` and
  /// `add_embedding`): the pooled text embeddings `[b, pooled]` next to the sinusoids of each
  /// row's six micro-conditioning numbers -> `[b, 4·c0]`, added to the time embedding.
  public func embedAddedConditions(_ added: AddedConditions, options: ComputeOptions) -> Tensor? {
    guard let addedEmbedding, let settings = configuration.textTimeEmbedding else { return nil }
    let rows = added.textEmbeds.shape[0]
    let sinusoids = timestepEmbedding(
      added.timeIDs.flatMap { $0 }, dimension: settings.timeEmbeddingWidth,
      flipSinToCos: configuration.flipSinToCos, downscaleFreqShift: configuration.freqShift)
    let input = concatenate(
      [added.textEmbeds, sinusoids.reshaped([rows, 6 * settings.timeEmbeddingWidth])], axis: 1)
    return addedEmbedding.linear2(
      activate(addedEmbedding.linear1(input, options: options), .silu, options: options),
      options: options)
  }

  /// Predicts noise for `sample` `[b, in, h, w]` at per-item `timesteps` (`b` values) given
  /// text states `[b, tokens, crossAttentionDim]` -> `[b, out, h, w]`. Batch items are
  /// independent, so the guidance layer runs negative and positive prompts in one call.
  public func callAsFunction(
    _ sample: Tensor, timesteps: [Float], context: Tensor, options: ComputeOptions,
    observer: Observer? = nil
  ) -> Tensor {
    self(
      sample, timesteps: timesteps, context: CrossAttentionContext(context), options: options,
      observer: observer)
  }

  /// As above, with everything the cross-attention layers attend to (see
  /// `CrossAttentionContext`); for UNets with `time_cond_proj_dim`, the per-item
  /// `timestepCondition` `[b, timeConditionDimension]` (diffusers' `timestep_cond`); for SDXL
  /// UNets, the `added` conditions of every item.
  public func callAsFunction(
    _ sample: Tensor, timesteps: [Float], context: CrossAttentionContext,
    timestepCondition: Tensor? = nil, added: AddedConditions? = nil, options: ComputeOptions,
    observer: Observer? = nil
  ) -> Tensor {
    precondition(
      sample.shape[0] == timesteps.count && context.states.shape[0] == sample.shape[0],
      "UNet batch: sample \(sample.shape), \(timesteps.count) timesteps, context \(context.states.shape)"
    )
    precondition(
      (added == nil) == (configuration.textTimeEmbedding == nil)
        && (added.map { $0.textEmbeds.shape[0] == sample.shape[0] } ?? true),
      "an SDXL UNet takes added conditions for every row, others none")
    var timeEmbedding = embedTimesteps(
      timesteps, condition: timestepCondition, options: options)
    observer?("time_embedding", timeEmbedding)
    if let added, let addedEmbedding = embedAddedConditions(added, options: options) {
      observer?("add_embedding", addedEmbedding)
      timeEmbedding.add(addedEmbedding)
    }
    var hidden = convIn(sample, options: options)
    observer?("conv_in", hidden)
    // Cancelled: the remaining blocks are skipped and the caller discards the zeros.
    let stopped = {
      Tensor(zeros: [sample.shape[0], configuration.outChannels, sample.shape[2], sample.shape[3]])
    }
    var skips = [hidden]
    for (index, block) in downBlocks.enumerated() {
      let (output, states) = block(
        hidden, timeEmbedding: timeEmbedding, context: context, options: options)
      hidden = output
      skips.append(contentsOf: states)
      if options.isCancelled { return stopped() }
      observer?("down_blocks.\(index)", hidden)
    }
    hidden = midBlock(hidden, timeEmbedding: timeEmbedding, context: context, options: options)
    if options.isCancelled { return stopped() }
    observer?("mid_block", hidden)
    for (index, block) in upBlocks.enumerated() {
      // After this block consumes its skips, the next skip on the stack has the size to reach.
      let remaining = skips.count - block.resnets.count
      let upsampleSize =
        remaining > 0 ? (skips[remaining - 1].shape[2], skips[remaining - 1].shape[3]) : nil
      hidden = block(
        hidden, skips: &skips, timeEmbedding: timeEmbedding, context: context,
        upsampleSize: upsampleSize, options: options)
      if options.isCancelled { return stopped() }
      observer?("up_blocks.\(index)", hidden)
    }
    return convOut(convNormOut(hidden, activation: .silu, options: options), options: options)
  }
}

/// SDXL's micro-conditioning of each UNet row (diffusers' `added_cond_kwargs`): the pooled,
/// projected embedding of the second text encoder and the six numbers original height and
/// width, crop top and left, target height and width.
public struct AddedConditions: Sendable {
  /// `text_embeds`: `[rows, pooled]`.
  public var textEmbeds: Tensor
  /// `time_ids`: six numbers per row.
  public var timeIDs: [[Float]]

  /// The conditions of rows whose pooled embeddings are `textEmbeds` `[rows, pooled]`.
  public init(textEmbeds: Tensor, timeIDs: [[Float]]) {
    precondition(
      textEmbeds.shape.count == 2 && timeIDs.count == textEmbeds.shape[0]
        && timeIDs.allSatisfy { $0.count == 6 }, "added conditions \(textEmbeds.shape), \(timeIDs)")
    self.textEmbeds = textEmbeds
    self.timeIDs = timeIDs
  }
}

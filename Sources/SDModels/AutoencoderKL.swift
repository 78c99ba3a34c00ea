// The VAE, mirroring diffusers' `AutoencoderKL` (models/autoencoders/autoencoder_kl.py and
// vae.py: `Encoder`, `Decoder`; their blocks are in UNet2DBlocks.swift), the `vae/` folder of a
// checkpoint. Latents are 1/8 the image size for SD; every group norm here uses eps 1e-6.

import Foundation
import SDTensor

/// The encoder half: image `[n, 3, H, W]` -> moments `[n, 2·latent, H/8, W/8]` (after quant_conv).
public struct VAEEncoder: Sendable {
  /// `encoder.conv_in`: 3×3, image channels -> the first block's channels.
  public let convIn: Conv2D
  /// `encoder.down_blocks.<i>`, one per `blockOutChannels` entry; all but the last halve the size.
  public let downBlocks: [DownEncoderBlock2D]
  /// `encoder.mid_block`: resnet, attention, resnet at the last block's channels.
  public let midBlock: UNetMidBlock2D
  /// `encoder.conv_norm_out`: group norm (SiLU follows) before `convOut`.
  public let convNormOut: GroupNorm
  /// `encoder.conv_out`: 3×3, last block's channels -> 2 · latent (mean and log-variance).
  public let convOut: Conv2D
  /// `quant_conv`: 1×1 on the moments; nil when `useQuantConv` is false.
  public let quantConv: Conv2D?

  init(_ store: WeightStore, _ config: AutoencoderConfiguration) throws(WeightError) {
    let channels = config.blockOutChannels
    let last = channels[channels.count - 1]
    convIn = try Conv2D(
      store, "encoder.conv_in", in: config.inChannels, out: channels[0], kernel: 3, padding: 1)
    var blocks: [DownEncoderBlock2D] = []
    for index in channels.indices {
      blocks.append(try DownEncoderBlock2D(store, index: index, configuration: config))
    }
    downBlocks = blocks
    midBlock = try UNetMidBlock2D(store, "encoder.mid_block", configuration: config)
    convNormOut = try GroupNorm(
      store, "encoder.conv_norm_out", groups: config.normGroups, channels: last, eps: vaeEps)
    let moments = 2 * config.latentChannels
    convOut = try Conv2D(store, "encoder.conv_out", in: last, out: moments, kernel: 3, padding: 1)
    quantConv =
      config.useQuantConv
      ? try Conv2D(store, "quant_conv", in: moments, out: moments, kernel: 1) : nil
  }

  /// Encodes `image` `[n, 3, H, W]` -> moments `[n, 2·latent, H/8, W/8]`; `observer` sees
  /// `encoder.mid_block`. Zeros of that shape when `options` is cancelled.
  public func callAsFunction(
    _ image: Tensor, options: ComputeOptions, observer: UNet2DConditionModel.Observer? = nil
  ) -> Tensor {
    var hidden = convIn(image, options: options)
    for block in downBlocks {
      hidden = block(hidden, options: options)
      if options.isCancelled { return stopped(image) }
    }
    hidden = midBlock(hidden, options: options)
    if options.isCancelled { return stopped(image) }
    observer?("encoder.mid_block", hidden)
    hidden = convOut(convNormOut(hidden, activation: .silu, options: options), options: options)
    return quantConv.map { $0(hidden, options: options) } ?? hidden
  }

  /// The zeros a cancelled pass returns (the caller discards them): the moments' shape.
  private func stopped(_ image: Tensor) -> Tensor {
    let factor = 1 << downBlocks.count { $0.downsampler != nil }
    return Tensor(zeros: [
      image.shape[0], convOut.outChannels, image.shape[2] / factor, image.shape[3] / factor,
    ])
  }
}

/// The decoder half: latents `[n, latent, h, w]` (already divided by the scaling factor) ->
/// image `[n, 3, 8h, 8w]` in about [-1, 1].
public struct VAEDecoder: Sendable {
  /// `post_quant_conv`: 1×1 on the latents; nil when `usePostQuantConv` is false.
  public let postQuantConv: Conv2D?
  /// `decoder.conv_in`: 3×3, latent channels -> the last block's channels.
  public let convIn: Conv2D
  /// `decoder.mid_block`: resnet, attention, resnet at the last block's channels.
  public let midBlock: UNetMidBlock2D
  /// `decoder.up_blocks.<i>`, deepest first; all but the last double the size.
  public let upBlocks: [UpDecoderBlock2D]
  /// `decoder.conv_norm_out`: group norm (SiLU follows) before `convOut`.
  public let convNormOut: GroupNorm
  /// `decoder.conv_out`: 3×3, the first block's channels -> image channels.
  public let convOut: Conv2D

  init(_ store: WeightStore, _ config: AutoencoderConfiguration) throws(WeightError) {
    let channels = config.blockOutChannels
    let latent = config.latentChannels
    postQuantConv =
      config.usePostQuantConv
      ? try Conv2D(store, "post_quant_conv", in: latent, out: latent, kernel: 1) : nil
    convIn = try Conv2D(
      store, "decoder.conv_in", in: latent, out: channels[channels.count - 1], kernel: 3,
      padding: 1)
    midBlock = try UNetMidBlock2D(store, "decoder.mid_block", configuration: config)
    var blocks: [UpDecoderBlock2D] = []
    for index in channels.indices {
      blocks.append(try UpDecoderBlock2D(store, index: index, configuration: config))
    }
    upBlocks = blocks
    convNormOut = try GroupNorm(
      store, "decoder.conv_norm_out", groups: config.normGroups, channels: channels[0],
      eps: vaeEps)
    convOut = try Conv2D(
      store, "decoder.conv_out", in: channels[0], out: config.outChannels, kernel: 3, padding: 1)
  }

  /// Decodes `latents` `[n, latent, h, w]` -> image `[n, 3, 8h, 8w]`; `observer` sees `conv_in`,
  /// `mid_block`, `up_blocks.<i>`. Zeros of that shape when `options` is cancelled.
  public func callAsFunction(
    _ latents: Tensor, options: ComputeOptions, observer: UNet2DConditionModel.Observer? = nil
  ) -> Tensor {
    var hidden = postQuantConv.map { $0(latents, options: options) } ?? latents
    hidden = convIn(hidden, options: options)
    observer?("conv_in", hidden)
    hidden = midBlock(hidden, options: options)
    if options.isCancelled { return stopped(latents) }
    observer?("mid_block", hidden)
    for (index, block) in upBlocks.enumerated() {
      hidden = block(hidden, options: options)
      if options.isCancelled { return stopped(latents) }
      observer?("up_blocks.\(index)", hidden)
    }
    return convOut(convNormOut(hidden, activation: .silu, options: options), options: options)
  }

  /// The zeros a cancelled pass returns (the caller discards them): the image's shape.
  private func stopped(_ latents: Tensor) -> Tensor {
    let factor = 1 << upBlocks.count { $0.upsampler != nil }
    return Tensor(zeros: [
      latents.shape[0], convOut.outChannels, latents.shape[2] * factor, latents.shape[3] * factor,
    ])
  }
}

/// The KL autoencoder: encodes images to latent distributions and decodes latents to images.
public struct AutoencoderKL: Sendable {
  /// The architecture it was built with (`vae/config.json`).
  public let configuration: AutoencoderConfiguration
  /// Image -> latent moments (diffusers' `vae.encoder` plus `quant_conv`).
  public let encoder: VAEEncoder
  /// Latents -> image (`post_quant_conv` plus diffusers' `vae.decoder`).
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

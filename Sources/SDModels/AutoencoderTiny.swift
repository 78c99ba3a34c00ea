// TAESD, madebyollin's distilled tiny VAE, mirroring diffusers' `AutoencoderTiny`
// (models/autoencoders/autoencoder_tiny.py; vae.py: `EncoderTiny`, `DecoderTiny`;
// unet_2d_blocks.py: `AutoencoderTinyBlock`): 3×3 convolutions and ReLUs, no norms, no attention.
// The diffusers-format folders `madebyollin/taesd` (SD 1.x/2.x) and `madebyollin/taesdxl`.

import Foundation
import SDTensor

/// diffusers' `AutoencoderTinyBlock`: three 3×3 convolutions with the activation between them,
/// plus the input (1×1-projected when the channels change), then ReLU. `[n, in, h, w]` ->
/// `[n, out, h, w]`.
public struct AutoencoderTinyBlock: Sendable {
  /// `conv.0`, `conv.2`, `conv.4` (the odd indices of the `nn.Sequential` are the activations).
  public let convs: [Conv2D]
  /// `skip`: 1×1 without bias when in ≠ out channels (never in TAESD's own configurations).
  public let skip: Conv2D?
  /// The activation between the convolutions (`act_fn`); the final `fuse` is always ReLU.
  public let activation: Activation

  init(
    _ store: WeightStore, _ key: String, in inChannels: Int, out outChannels: Int,
    activation: Activation
  ) throws(WeightError) {
    var convs: [Conv2D] = []
    for (index, input) in [(0, inChannels), (2, outChannels), (4, outChannels)] {
      convs.append(
        try Conv2D(
          store, "\(key).conv.\(index)", in: input, out: outChannels, kernel: 3, padding: 1))
    }
    self.convs = convs
    skip =
      inChannels == outChannels
      ? nil
      : try Conv2D(store, "\(key).skip", in: inChannels, out: outChannels, kernel: 1, bias: false)
    self.activation = activation
  }

  /// `fuse(conv(x) + skip(x))`.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = activate(convs[0](x, options: options), activation, options: options)
    hidden = activate(convs[1](hidden, options: options), activation, options: options)
    hidden = convs[2](hidden, options: options)
    hidden.add(skip.map { $0(x, options: options) } ?? x)
    return activate(hidden, .relu, options: options)
  }

  /// The `<key>.layers.<first>`, `<first + 1>`, ... blocks of one stage, `count` of them.
  static func stage(
    _ store: WeightStore, _ key: String, first: Int, count: Int, channels: Int,
    activation: Activation
  ) throws(WeightError) -> [AutoencoderTinyBlock] {
    var blocks: [AutoencoderTinyBlock] = []
    for index in first..<first + count {
      blocks.append(
        try AutoencoderTinyBlock(
          store, "\(key).layers.\(index)", in: channels, out: channels, activation: activation))
    }
    return blocks
  }
}

/// diffusers' `EncoderTiny`: image in [-1, 1] `[n, 3, H, W]` -> latents `[n, latent, H/f, W/f]`
/// (f = 2^(stages − 1), 8 for TAESD), as the UNet sees them (TAESD's scaling factor is 1).
public struct EncoderTiny: Sendable {
  /// One stage of the `encoder.layers` sequence: a convolution, then blocks.
  public struct Stage: Sendable {
    /// 3×3: image channels -> the stage's with bias in the first stage; stride 2 without bias
    /// in the others (which halve the size).
    public let conv: Conv2D
    /// The stage's `AutoencoderTinyBlock`s (`num_encoder_blocks[i]` of them).
    public let blocks: [AutoencoderTinyBlock]
  }

  /// The stages, shallowest first.
  public let stages: [Stage]
  /// The last layer: 3×3, the last stage's channels -> latent channels, with bias.
  public let convOut: Conv2D

  init(_ store: WeightStore, _ config: AutoencoderTinyConfiguration) throws(WeightError) {
    // `encoder.layers` is one nn.Sequential; its indices count convolutions and blocks alike.
    var index = 0
    var stages: [Stage] = []
    var previous = config.inChannels
    for (stage, channels) in config.encoderBlockOutChannels.enumerated() {
      let conv =
        stage == 0
        ? try Conv2D(store, "encoder.layers.0", in: previous, out: channels, kernel: 3, padding: 1)
        : try Conv2D(
          store, "encoder.layers.\(index)", in: channels, out: channels, kernel: 3, stride: 2,
          padding: 1, bias: false)
      let count = config.encoderBlockCounts[stage]
      let blocks = try AutoencoderTinyBlock.stage(
        store, "encoder", first: index + 1, count: count, channels: channels,
        activation: config.activation)
      stages.append(Stage(conv: conv, blocks: blocks))
      index += 1 + count
      previous = channels
    }
    self.stages = stages
    convOut = try Conv2D(
      store, "encoder.layers.\(index)", in: previous, out: config.latentChannels, kernel: 3,
      padding: 1)
  }

  /// Encodes `image` in [-1, 1] `[n, in, H, W]` -> latents; zeros of that shape when `options`
  /// is cancelled.
  public func callAsFunction(_ image: Tensor, options: ComputeOptions) -> Tensor {
    // diffusers: "scale image from [-1, 1] to [0, 1] to match TAESD convention".
    var hidden = image.map { ($0 + 1) / 2 }
    for stage in stages {
      hidden = stage.conv(hidden, options: options)
      for block in stage.blocks { hidden = block(hidden, options: options) }
      if options.isCancelled { return stopped(image) }
    }
    return convOut(hidden, options: options)
  }

  /// The zeros a cancelled pass returns (the caller discards them): the latents' shape, each
  /// stride-2 stage taking a side of s to ⌈s/2⌉.
  private func stopped(_ image: Tensor) -> Tensor {
    var (height, width) = (image.shape[2], image.shape[3])
    for _ in 1..<stages.count { (height, width) = ((height + 1) / 2, (width + 1) / 2) }
    return Tensor(zeros: [image.shape[0], convOut.outChannels, height, width])
  }
}

/// diffusers' `DecoderTiny`: latents `[n, latent, h, w]` as the UNet sees them -> image
/// `[n, 3, f·h, f·w]` in about [-1, 1] (f = factor^(stages − 1), 8 for TAESD).
public struct DecoderTiny: Sendable {
  /// One stage of the `decoder.layers` sequence: blocks, then (in all but the last) a
  /// nearest-neighbour upsampling, then a convolution.
  public struct Stage: Sendable {
    /// The stage's `AutoencoderTinyBlock`s (`num_decoder_blocks[i]` of them).
    public let blocks: [AutoencoderTinyBlock]
    /// Whether a nearest-neighbour upsampling by `upsamplingFactor` follows the blocks
    /// (`nn.Upsample`, a layer without weights that takes an index of its own).
    public let upsamples: Bool
    /// 3×3: the stage's channels -> the same (without bias), or in the last stage -> image
    /// channels (with bias).
    public let conv: Conv2D
  }

  /// `layers.0`: 3×3, latent channels -> the first stage's; the activation (`layers.1`) follows.
  public let convIn: Conv2D
  /// The stages, deepest (smallest) first.
  public let stages: [Stage]
  /// Pixels per input pixel of each upsampling (`upsampling_scaling_factor`, 2).
  public let upsamplingFactor: Int
  /// `act_fn`, after `convIn` and inside the blocks.
  public let activation: Activation

  init(_ store: WeightStore, _ config: AutoencoderTinyConfiguration) throws(WeightError) {
    let channels = config.decoderBlockOutChannels
    convIn = try Conv2D(
      store, "decoder.layers.0", in: config.latentChannels, out: channels[0], kernel: 3,
      padding: 1)
    // Index 1 is the activation after convIn; then blocks, upsampler and conv per stage.
    var index = 2
    var stages: [Stage] = []
    for (stage, width) in channels.enumerated() {
      let isLast = stage == channels.count - 1
      let count = config.decoderBlockCounts[stage]
      let blocks = try AutoencoderTinyBlock.stage(
        store, "decoder", first: index, count: count, channels: width,
        activation: config.activation)
      index += count + (isLast ? 0 : 1)
      let conv = try Conv2D(
        store, "decoder.layers.\(index)", in: width, out: isLast ? config.outChannels : width,
        kernel: 3, padding: 1, bias: isLast)
      index += 1
      stages.append(Stage(blocks: blocks, upsamples: !isLast, conv: conv))
    }
    self.stages = stages
    upsamplingFactor = config.upsamplingScalingFactor
    activation = config.activation
  }

  /// Pixels per latent along each axis.
  public var scaleFactor: Int {
    stages.reduce(1) { $1.upsamples ? $0 * upsamplingFactor : $0 }
  }

  /// Decodes `latents` `[n, latent, h, w]` -> image `[n, 3, f·h, f·w]`; zeros of that shape
  /// when `options` is cancelled.
  public func callAsFunction(_ latents: Tensor, options: ComputeOptions) -> Tensor {
    // diffusers' soft clamp of the input to (-3, 3): tanh(x / 3) · 3.
    var hidden = latents.map { Foundation.tanh($0 / 3) * 3 }
    hidden = activate(convIn(hidden, options: options), activation, options: options)
    for stage in stages {
      for block in stage.blocks { hidden = block(hidden, options: options) }
      if options.isCancelled {
        let factor = scaleFactor
        return Tensor(zeros: [
          latents.shape[0], stages[stages.count - 1].conv.outChannels,
          latents.shape[2] * factor, latents.shape[3] * factor,
        ])
      }
      if stage.upsamples {
        hidden = upsampleNearest(
          hidden, height: hidden.shape[2] * upsamplingFactor,
          width: hidden.shape[3] * upsamplingFactor, options: options)
      }
      hidden = stage.conv(hidden, options: options)
    }
    // diffusers: "scale image from [0, 1] to [-1, 1] to match diffusers convention".
    return hidden.map { $0 * 2 - 1 }
  }
}

/// The tiny autoencoder (diffusers' `AutoencoderTiny`): TAESD's encoder and decoder, a few
/// percent of the SD VAE's work. It decodes the latents the UNet works on directly (its
/// `scalingFactor` is 1), to about the picture the full VAE gives, for previews and fast drafts.
public struct AutoencoderTiny: Sendable {
  /// The architecture it was built with (`config.json`).
  public let configuration: AutoencoderTinyConfiguration
  /// Image -> latents (`encoder.layers`).
  public let encoder: EncoderTiny
  /// Latents -> image (`decoder.layers`).
  public let decoder: DecoderTiny

  /// Builds encoder and decoder from `store` by diffusers key.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  public init(configuration: AutoencoderTinyConfiguration, weights store: WeightStore)
    throws(WeightError)
  {
    self.configuration = configuration
    encoder = try EncoderTiny(store, configuration)
    decoder = try DecoderTiny(store, configuration)
  }

  /// Builds the model of a TAESD folder opened with `folder(at:)`.
  /// - Throws: `ModelError.weights` naming a missing or mis-shaped key; `.unusedWeights` when
  ///   the file holds tensors no layer reads (it is then not the model its config describes).
  public init(_ part: ModelFolder.Part<AutoencoderTinyConfiguration>) throws(ModelError) {
    do { try self.init(configuration: part.configuration, weights: part.weights) } catch {
      throw .weights(error)
    }
    let unused = part.weights.unreadKeys()
    guard unused.isEmpty else {
      throw .unusedWeights(keys: unused, file: part.weights.origin)
    }
  }

  /// The configuration and weights of a diffusers AutoencoderTiny folder (`config.json` and
  /// `diffusion_pytorch_model.safetensors` or its `.fp16` variant, as in `madebyollin/taesd`).
  /// Half-precision files are widened to Float32 when read (the model is ~2.4 M parameters).
  /// - Throws: `ModelError.invalidConfiguration` when the folder has no `config.json` or it is
  ///   not an AutoencoderTiny's; `.weights` when the weights file is missing or unreadable.
  public static func folder(at url: URL) throws(ModelError)
    -> ModelFolder.Part<
      AutoencoderTinyConfiguration
    >
  {
    let config = url.appendingPathComponent("config.json")
    guard FileManager.default.fileExists(atPath: config.path) else {
      throw .invalidConfiguration(
        file: url.path,
        reason:
          "no config.json: not a diffusers AutoencoderTiny folder (TAESD: madebyollin/taesd on Hugging Face)"
      )
    }
    let configuration = try AutoencoderTinyConfiguration(contentsOf: config)
    let weights = try WeightStore.open(directory: url, stem: "diffusion_pytorch_model")
    return ModelFolder.Part(configuration: configuration, weights: weights)
  }

  /// Pixels per latent along each axis (8 for TAESD).
  public var scaleFactor: Int { decoder.scaleFactor }

  /// Encodes an image in [-1, 1] `[n, 3, H, W]` -> latents `[n, latent, H/8, W/8]`, as
  /// diffusers' `vae.encode(image).latents` (multiply by `scalingFactor`, 1, for the UNet).
  public func encode(_ image: Tensor, options: ComputeOptions) -> Tensor {
    encoder(image, options: options)
  }

  /// Decodes latents (divided by `scalingFactor`, 1 for TAESD) -> image `[n, 3, 8h, 8w]` in
  /// about [-1, 1], as diffusers' `vae.decode(latents).sample`.
  public func decode(_ latents: Tensor, options: ComputeOptions) -> Tensor {
    decoder(latents, options: options)
  }
}

/// The tiny autoencoder's architecture (diffusers `AutoencoderTiny`, its `config.json`).
public struct AutoencoderTinyConfiguration: Sendable, Equatable {
  /// `in_channels`: channels of the images the encoder takes (3).
  public var inChannels: Int
  /// `out_channels`: channels of the images the decoder returns (3).
  public var outChannels: Int
  /// `latent_channels`: channels of the latents (4 for SD 1.x/2.x and SDXL, 16 for SD 3/Flux).
  public var latentChannels: Int
  /// `encoder_block_out_channels`: channels of each encoder stage ([64, 64, 64, 64]).
  public var encoderBlockOutChannels: [Int]
  /// `decoder_block_out_channels`: channels of each decoder stage ([64, 64, 64, 64]).
  public var decoderBlockOutChannels: [Int]
  /// `num_encoder_blocks`: `AutoencoderTinyBlock`s per encoder stage ([1, 3, 3, 3]).
  public var encoderBlockCounts: [Int]
  /// `num_decoder_blocks`: `AutoencoderTinyBlock`s per decoder stage ([3, 3, 3, 1]).
  public var decoderBlockCounts: [Int]
  /// `act_fn`: the activation inside the blocks and after the decoder's first convolution.
  public var activation: Activation
  /// `upsampling_scaling_factor`: each decoder stage but the last upsamples by this (2).
  public var upsamplingScalingFactor: Int
  /// `latent_magnitude` and `latent_shift` (3, 0.5): diffusers maps latents to [0, 1] bytes with
  /// them in `scale_latents`, used only by its `forward` round trip; read and kept, not used.
  public var latentMagnitude: Float
  /// See `latentMagnitude`.
  public var latentShift: Float
  /// `scaling_factor`: diffusers' pipelines divide the latents by it before decoding (1: TAESD
  /// decodes the latents as the UNet sees them).
  public var scalingFactor: Float

  /// Pixels per latent along each axis: the upsampling factor once per decoder stage but the
  /// last (8 for TAESD).
  public var scaleFactor: Int {
    (1..<decoderBlockOutChannels.count).reduce(1) { product, _ in product * upsamplingScalingFactor
    }
  }

  /// diffusers' `AutoencoderTiny()` defaults, the configuration of `madebyollin/taesd`.
  public static let taesd = AutoencoderTinyConfiguration(
    inChannels: 3, outChannels: 3, latentChannels: 4, encoderBlockOutChannels: [64, 64, 64, 64],
    decoderBlockOutChannels: [64, 64, 64, 64], encoderBlockCounts: [1, 3, 3, 3],
    decoderBlockCounts: [3, 3, 3, 1], activation: .relu, upsamplingScalingFactor: 2,
    latentMagnitude: 3, latentShift: 0.5, scalingFactor: 1)

  /// A configuration of exactly these values, not checked as `init(contentsOf:)` checks a file
  /// (the presets are built so).
  public init(
    inChannels: Int, outChannels: Int, latentChannels: Int, encoderBlockOutChannels: [Int],
    decoderBlockOutChannels: [Int], encoderBlockCounts: [Int], decoderBlockCounts: [Int],
    activation: Activation, upsamplingScalingFactor: Int, latentMagnitude: Float,
    latentShift: Float, scalingFactor: Float
  ) {
    self.inChannels = inChannels
    self.outChannels = outChannels
    self.latentChannels = latentChannels
    self.encoderBlockOutChannels = encoderBlockOutChannels
    self.decoderBlockOutChannels = decoderBlockOutChannels
    self.encoderBlockCounts = encoderBlockCounts
    self.decoderBlockCounts = decoderBlockCounts
    self.activation = activation
    self.upsamplingScalingFactor = upsamplingScalingFactor
    self.latentMagnitude = latentMagnitude
    self.latentShift = latentShift
    self.scalingFactor = scalingFactor
  }

  /// Decodes an AutoencoderTiny `config.json`; absent fields take diffusers' defaults.
  /// - Throws: `ModelError.invalidConfiguration` naming the file and field.
  public init(contentsOf url: URL) throws(ModelError) {
    let reader = try ConfigReader(contentsOf: url)
    let className = try reader.string("_class_name", default: "AutoencoderTiny")
    guard className == "AutoencoderTiny" else {
      throw reader.fail(
        "_class_name",
        "AutoencoderTiny (found \(className): a TAESD folder such as madebyollin/taesd is needed)")
    }
    inChannels = try reader.int("in_channels", in: 1...64) ?? 3
    outChannels = try reader.int("out_channels", in: 1...64) ?? 3
    latentChannels = try reader.int("latent_channels", in: 1...64) ?? 4
    encoderBlockOutChannels = try Self.list(
      reader, "encoder_block_out_channels", default: [64, 64, 64, 64], in: 1...4096)
    decoderBlockOutChannels = try Self.list(
      reader, "decoder_block_out_channels", default: [64, 64, 64, 64], in: 1...4096)
    encoderBlockCounts = try Self.list(
      reader, "num_encoder_blocks", default: [1, 3, 3, 3], in: 0...64)
    decoderBlockCounts = try Self.list(
      reader, "num_decoder_blocks", default: [3, 3, 3, 1], in: 0...64)
    for (channels, counts) in [
      ("encoder_block_out_channels", "num_encoder_blocks"),
      ("decoder_block_out_channels", "num_decoder_blocks"),
    ] {
      let (widths, blocks) =
        channels.hasPrefix("encoder")
        ? (encoderBlockOutChannels, encoderBlockCounts)
        : (decoderBlockOutChannels, decoderBlockCounts)
      guard widths.count == blocks.count else {
        throw reader.fail(counts, "as long as \(channels) (\(widths.count))")
      }
      // Each stage's first layer takes the previous stage's output at its own width, so
      // diffusers' model only runs when the stages are equally wide.
      guard widths.allSatisfy({ $0 == widths[0] }) else {
        throw reader.fail(channels, "the same width for every stage (found \(widths))")
      }
    }
    let name = try reader.string("act_fn", default: "relu")
    switch name {
    case "relu": activation = .relu
    case "silu", "swish": activation = .silu
    case "gelu": activation = .gelu
    default: throw reader.fail("act_fn", "relu, silu, swish or gelu (found \(name))")
    }
    _ = try reader.string("upsample_fn", oneOf: ["nearest"])
    upsamplingScalingFactor = try reader.int("upsampling_scaling_factor", in: 1...8) ?? 2
    latentMagnitude = try reader.positiveFloat("latent_magnitude", default: 3)
    latentShift = try reader.float("latent_shift", default: 0.5)
    scalingFactor = try reader.positiveFloat("scaling_factor", default: 1)
    guard scaleFactor <= 64 else {
      throw reader.fail(
        "upsampling_scaling_factor",
        "small enough that its power over the decoder stages is at most 64 (it is \(scaleFactor))")
    }
  }

  /// A list of 1 to 8 integers in `range`; `fallback` when absent.
  private static func list(
    _ reader: ConfigReader, _ key: String, default fallback: [Int], in range: ClosedRange<Int>
  ) throws(ModelError) -> [Int] {
    guard let raw = reader.value(key) else { return fallback }
    guard let items = raw.arrayValue, (1...8).contains(items.count) else {
      throw reader.fail(key, "a list of 1 to 8 integers")
    }
    let values = items.compactMap(\.intValue)
    guard values.count == items.count, values.allSatisfy(range.contains) else {
      throw reader.fail(key, "a list of integers in \(range)")
    }
    return values
  }
}

// The building blocks shared by the UNet and the VAE, mirroring diffusers: `ResnetBlock2D`
// (models/resnet.py), `Downsample2D`/`Upsample2D` (models/downsampling.py, upsampling.py),
// `Transformer2DModel` and `BasicTransformerBlock` (models/transformers/, models/attention.py).

import SDTensor

/// `ResnetBlock2D`: norm → SiLU → conv, plus the time embedding, norm → SiLU → conv, plus the
/// (1×1-projected when channels change) input. `[n, in, h, w]` -> `[n, out, h, w]`.
public struct ResnetBlock2D: Sendable {
  public let norm1: GroupNorm
  public let conv1: Conv2D
  /// Absent in the VAE, whose resnets take no time embedding.
  public let timeEmbProj: Linear?
  public let norm2: GroupNorm
  public let conv2: Conv2D
  public let convShortcut: Conv2D?

  init(
    _ store: WeightStore, _ key: String, in inChannels: Int, out outChannels: Int,
    timeEmbeddingChannels: Int?, groups: Int, eps: Float
  ) throws(WeightError) {
    norm1 = try GroupNorm(store, "\(key).norm1", groups: groups, channels: inChannels, eps: eps)
    conv1 = try Conv2D(
      store, "\(key).conv1", in: inChannels, out: outChannels, kernel: 3, padding: 1)
    timeEmbProj = try timeEmbeddingChannels.map { channels throws(WeightError) in
      try Linear(store, "\(key).time_emb_proj", in: channels, out: outChannels)
    }
    norm2 = try GroupNorm(store, "\(key).norm2", groups: groups, channels: outChannels, eps: eps)
    conv2 = try Conv2D(
      store, "\(key).conv2", in: outChannels, out: outChannels, kernel: 3, padding: 1)
    convShortcut =
      inChannels == outChannels
      ? nil : try Conv2D(store, "\(key).conv_shortcut", in: inChannels, out: outChannels, kernel: 1)
  }

  /// `timeEmbedding`: `[n, temb]`, already the UNet's embedding; SiLU is applied here as in
  /// diffusers (`nonlinearity(temb)` before `time_emb_proj`).
  public func callAsFunction(_ x: Tensor, timeEmbedding: Tensor?, options: ComputeOptions) -> Tensor
  {
    var hidden = conv1(norm1(x, activation: .silu, options: options), options: options)
    if let timeEmbProj, let timeEmbedding {
      let projected = timeEmbProj(
        activate(timeEmbedding, .silu, options: options), options: options)
      hidden = hidden + projected.reshaped([projected.shape[0], projected.shape[1], 1, 1])
    }
    hidden = conv2(norm2(hidden, activation: .silu, options: options), options: options)
    var residual = convShortcut.map { $0(x, options: options) } ?? x
    residual.add(hidden)
    return residual
  }
}

/// `Downsample2D` with a convolution: 3×3, stride 2. The UNet pads 1 on every side; the VAE
/// encoder pads only right and bottom (by 1) and convolves without padding.
public struct Downsample2D: Sendable {
  public let conv: Conv2D
  public let padsRightAndBottomOnly: Bool

  init(_ store: WeightStore, _ key: String, channels: Int, padsRightAndBottomOnly: Bool)
    throws(WeightError)
  {
    conv = try Conv2D(
      store, "\(key).conv", in: channels, out: channels, kernel: 3, stride: 2,
      padding: padsRightAndBottomOnly ? 0 : 1)
    self.padsRightAndBottomOnly = padsRightAndBottomOnly
  }

  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    conv(padsRightAndBottomOnly ? padRightAndBottom(x) : x, options: options)
  }
}

/// `Upsample2D` with a convolution: nearest-neighbour 2× (or to the skip connection's size),
/// then a 3×3 convolution.
public struct Upsample2D: Sendable {
  public let conv: Conv2D

  init(_ store: WeightStore, _ key: String, channels: Int) throws(WeightError) {
    conv = try Conv2D(store, "\(key).conv", in: channels, out: channels, kernel: 3, padding: 1)
  }

  /// `size`: the (height, width) to upsample to; twice the input when nil.
  public func callAsFunction(_ x: Tensor, size: (Int, Int)? = nil, options: ComputeOptions)
    -> Tensor
  {
    let (height, width) = size ?? (2 * x.shape[2], 2 * x.shape[3])
    return conv(
      upsampleNearest(x, height: height, width: width, options: options), options: options)
  }
}

/// `BasicTransformerBlock`: self-attention, cross-attention on the text embeddings and a GEGLU
/// feed-forward, each pre-normed and residual. `[b, t, dim]` -> `[b, t, dim]`.
public struct BasicTransformerBlock: Sendable {
  public let norm1: LayerNorm
  public let attn1: Attention
  public let norm2: LayerNorm
  public let attn2: Attention
  public let norm3: LayerNorm
  /// `ff.net.0.proj`: dim -> 2 · 4dim (value and gate of GEGLU).
  public let ffProj: Linear
  /// `ff.net.2`: 4dim -> dim (`ff.net.1` is a dropout).
  public let ffOut: Linear

  init(
    _ store: WeightStore, _ key: String, dim: Int, heads: Int, contextDim: Int
  ) throws(WeightError) {
    // LayerNorm eps is diffusers' default norm_eps 1e-5 for these blocks.
    norm1 = try LayerNorm(store, "\(key).norm1", channels: dim, eps: 1e-5)
    attn1 = try Attention(store, "\(key).attn1", queryDim: dim, heads: heads, headDim: dim / heads)
    norm2 = try LayerNorm(store, "\(key).norm2", channels: dim, eps: 1e-5)
    attn2 = try Attention(
      store, "\(key).attn2", queryDim: dim, contextDim: contextDim, heads: heads,
      headDim: dim / heads)
    norm3 = try LayerNorm(store, "\(key).norm3", channels: dim, eps: 1e-5)
    ffProj = try Linear(store, "\(key).ff.net.0.proj", in: dim, out: 8 * dim)
    ffOut = try Linear(store, "\(key).ff.net.2", in: 4 * dim, out: dim)
  }

  public func callAsFunction(_ x: Tensor, context: Tensor, options: ComputeOptions) -> Tensor {
    var hidden = x
    hidden.add(attn1(norm1(hidden, options: options), options: options))
    hidden.add(attn2(norm2(hidden, options: options), context: context, options: options))
    hidden.add(
      ffOut(
        geglu(ffProj(norm3(hidden, options: options), options: options), options: options),
        options: options))
    return hidden
  }
}

/// `Transformer2DModel` as SD uses it: group norm, proj_in (1×1 conv, or linear with
/// `use_linear_projection`), transformer blocks over the H·W tokens, proj_out, plus the input.
/// `[n, c, h, w]` -> `[n, c, h, w]`.
public struct Transformer2DModel: Sendable {
  public let norm: GroupNorm
  public let projIn: Projection
  public let transformerBlocks: [BasicTransformerBlock]
  public let projOut: Projection

  /// proj_in/proj_out are 1×1 convolutions in SD 1.x and linear layers in SD 2.x; both map
  /// channels to channels, so one type holds either.
  public enum Projection: Sendable {
    case convolution(Conv2D)
    case linear(Linear)
  }

  init(
    _ store: WeightStore, _ key: String, channels: Int, heads: Int, contextDim: Int, layers: Int,
    linearProjection: Bool, groups: Int
  ) throws(WeightError) {
    // The transformer's group norm uses eps 1e-6 (diffusers Transformer2DModel), not norm_eps.
    norm = try GroupNorm(store, "\(key).norm", groups: groups, channels: channels, eps: 1e-6)
    func projection(_ name: String) throws(WeightError) -> Projection {
      linearProjection
        ? .linear(try Linear(store, "\(key).\(name)", in: channels, out: channels))
        : .convolution(try Conv2D(store, "\(key).\(name)", in: channels, out: channels, kernel: 1))
    }
    projIn = try projection("proj_in")
    var blocks: [BasicTransformerBlock] = []
    for index in 0..<layers {
      blocks.append(
        try BasicTransformerBlock(
          store, "\(key).transformer_blocks.\(index)", dim: channels, heads: heads,
          contextDim: contextDim))
    }
    transformerBlocks = blocks
    projOut = try projection("proj_out")
  }

  public func callAsFunction(_ x: Tensor, context: Tensor, options: ComputeOptions) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var hidden = norm(x, options: options)
    // Tokens are the h·w positions: NCHW -> [n, h·w, c] around the blocks.
    if case .convolution(let conv) = projIn { hidden = conv(hidden, options: options) }
    hidden = hidden.reshaped([n, c, h * w]).transposedLastTwo()
    if case .linear(let linear) = projIn { hidden = linear(hidden, options: options) }
    for block in transformerBlocks { hidden = block(hidden, context: context, options: options) }
    if case .linear(let linear) = projOut { hidden = linear(hidden, options: options) }
    hidden = hidden.transposedLastTwo().reshaped([n, c, h, w])
    if case .convolution(let conv) = projOut { hidden = conv(hidden, options: options) }
    hidden.add(x)
    return hidden
  }
}

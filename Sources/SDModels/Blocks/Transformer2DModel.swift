// `Transformer2DModel` (diffusers models/transformers/transformer_2d.py) and the
// `BasicTransformerBlock` it stacks (models/attention.py), as SD's UNet uses them.

import SDTensor

/// `BasicTransformerBlock`: self-attention, cross-attention on the text embeddings and a GEGLU
/// feed-forward, each pre-normed and residual. `[b, t, dim]` -> `[b, t, dim]`.
public struct BasicTransformerBlock: Sendable {
  /// `norm1`: layer norm before self-attention.
  public let norm1: LayerNorm
  /// `attn1`: self-attention over the h·w tokens.
  public let attn1: Attention
  /// `norm2`: layer norm before cross-attention.
  public let norm2: LayerNorm
  /// `attn2`: cross-attention on the text states (keys and values from `crossAttentionDim`).
  public let attn2: Attention
  /// `norm3`: layer norm before the feed-forward.
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

  /// The three residual sub-layers on `x` `[b, t, dim]` with the text states of `context`;
  /// same shape.
  public func callAsFunction(_ x: Tensor, context: CrossAttentionContext, options: ComputeOptions)
    -> Tensor
  {
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
/// `use_linear_projection`; both applied as a linear layer), transformer blocks over the H·W
/// tokens, proj_out, plus the input.
/// `[n, c, h, w]` -> `[n, c, h, w]`.
public struct Transformer2DModel: Sendable {
  /// `norm`: group norm of the input, eps 1e-6.
  public let norm: GroupNorm
  /// `proj_in`: channels -> channels on each token, before the blocks.
  public let projIn: Linear
  /// `transformer_blocks.<i>`: the block's `transformerLayersPerBlock` entry (1 in SD).
  public let transformerBlocks: [BasicTransformerBlock]
  /// `proj_out`: channels -> channels on each token, after the blocks (then the input is added).
  public let projOut: Linear

  init(
    _ store: WeightStore, _ key: String, channels: Int, heads: Int, contextDim: Int, layers: Int,
    linearProjection: Bool, groups: Int
  ) throws(WeightError) {
    // The transformer's group norm uses eps 1e-6 (diffusers Transformer2DModel), not norm_eps.
    norm = try GroupNorm(store, "\(key).norm", groups: groups, channels: channels, eps: 1e-6)
    // proj_in/proj_out are linear layers in SD 2.x and 1×1 convolutions in SD 1.x. A 1×1
    // convolution is the same map of each position's channels, so it is applied as a linear
    // layer on the tokens, its weight `[c, c, 1, 1]` read as `[c, c]`: one product over all
    // h·w·n tokens with its weight packed once, instead of one per image of the NCHW tensor
    // (SD 1.5, 2 × 320 × 64 × 64 with the transpose, on two threads: 0.022 -> 0.015 s).
    // Every output is the same FMA chain either way, so the bits are the same.
    func projection(_ name: String) throws(WeightError) -> Linear {
      if linearProjection {
        return try Linear(store, "\(key).\(name)", in: channels, out: channels)
      }
      let conv = try Conv2D(store, "\(key).\(name)", in: channels, out: channels, kernel: 1)
      return Linear(weight: conv.weight.reshaped([channels, channels]), bias: conv.bias)
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

  /// The `<key>.attentions.<j>` of a UNet block, `count` of them, as `configuration` builds them.
  static func stack(
    _ store: WeightStore, _ key: String, count: Int, channels: Int, heads: Int, layers: Int,
    configuration config: UNetConfiguration
  ) throws(WeightError) -> [Transformer2DModel] {
    var attentions: [Transformer2DModel] = []
    for index in 0..<count {
      attentions.append(
        try Transformer2DModel(
          store, "\(key).attentions.\(index)", channels: channels, heads: heads,
          contextDim: config.crossAttentionDim, layers: layers,
          linearProjection: config.useLinearProjection, groups: config.normGroups))
    }
    return attentions
  }

  /// Runs the transformer on `x` `[n, c, h, w]` with the text states of `context` and adds `x`;
  /// same shape.
  public func callAsFunction(_ x: Tensor, context: CrossAttentionContext, options: ComputeOptions)
    -> Tensor
  {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var hidden = norm(x, options: options)
    // Tokens are the h·w positions: NCHW -> [n, h·w, c] around the blocks.
    hidden = hidden.reshaped([n, c, h * w]).transposedLastTwo(options: options)
    hidden = projIn(hidden, options: options)
    for block in transformerBlocks { hidden = block(hidden, context: context, options: options) }
    hidden = projOut(hidden, options: options)
    hidden = hidden.transposedLastTwo(options: options).reshaped([n, c, h, w])
    hidden.add(x)
    return hidden
  }
}

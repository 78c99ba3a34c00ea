// diffusers' `Attention` (models/attention_processor.py) for the UNet's transformer blocks and
// the VAE's mid block: to_q/to_k/to_v projections, multi-head attention, to_out.0.

import SDTensor

/// Multi-head attention of `[b, t, queryDim]` on itself or on a context `[b, s, contextDim]`.
public struct Attention: Sendable {
  public let heads: Int
  public let toQ: Linear
  public let toK: Linear
  public let toV: Linear
  /// `to_out.0`; diffusers' `to_out.1` is a dropout, so the index 0 is written literally.
  public let toOut: Linear

  /// Reads the projections under `key`; `inner = heads · headDim`.
  /// - Throws: `WeightError` when a tensor is missing or has another shape.
  public init(
    _ store: WeightStore, _ key: String, queryDim: Int, contextDim: Int? = nil, heads: Int,
    headDim: Int, projectionBias: Bool = false
  ) throws(WeightError) {
    let inner = heads * headDim
    self.heads = heads
    toQ = try Linear(store, "\(key).to_q", in: queryDim, out: inner, bias: projectionBias)
    toK = try Linear(
      store, "\(key).to_k", in: contextDim ?? queryDim, out: inner, bias: projectionBias)
    toV = try Linear(
      store, "\(key).to_v", in: contextDim ?? queryDim, out: inner, bias: projectionBias)
    toOut = try Linear(store, "\(key).to_out.0", in: inner, out: queryDim)
  }

  /// Cross-attention of `x` on the text states of `context`.
  public func callAsFunction(
    _ x: Tensor, context: CrossAttentionContext, options: ComputeOptions
  ) -> Tensor {
    self(x, states: context.states, options: options)
  }

  /// Self-attention when `states` is nil, attention on `states` `[b, s, contextDim]` otherwise.
  public func callAsFunction(
    _ x: Tensor, states: Tensor? = nil, options: ComputeOptions
  ) -> Tensor {
    let source = states ?? x
    let attended = scaledDotProductAttention(
      query: toQ(x, options: options), key: toK(source, options: options),
      value: toV(source, options: options),
      heads: heads, options: options)
    return toOut(attended, options: options)
  }
}

/// What the UNet's cross-attention layers attend to, passed unchanged through its blocks: the
/// text states of each batch row `[b, tokens, crossAttentionDim]`.
public struct CrossAttentionContext: Sendable {
  /// The text encoder's output for each row of the UNet batch.
  public var states: Tensor

  public init(_ states: Tensor) {
    self.states = states
  }
}

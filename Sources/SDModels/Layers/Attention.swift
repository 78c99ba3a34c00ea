// diffusers' `Attention` (models/attention_processor.py) for the UNet's transformer blocks and
// the VAE's mid block: to_q/to_k/to_v projections, multi-head attention, to_out.0.

import SDTensor

/// Multi-head attention of `[b, t, queryDim]` on itself or on a context `[b, s, contextDim]`.
public struct Attention: Sendable {
  /// Number of heads the projections' `heads · headDim` channels are split into.
  public let heads: Int
  /// `to_q`: queryDim -> heads · headDim, no bias except in the VAE.
  public let toQ: Linear
  /// `to_k`: contextDim (queryDim for self-attention) -> heads · headDim.
  public let toK: Linear
  /// `to_v`: contextDim (queryDim for self-attention) -> heads · headDim.
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

  /// Cross-attention of `x` on the text states of `context`. With an attention guidance, its
  /// rows also attend to each negative context with the same queries, and the guidance
  /// combines the outputs before `to_out`.
  public func callAsFunction(
    _ x: Tensor, context: CrossAttentionContext, options: ComputeOptions
  ) -> Tensor {
    let query = toQ(x, options: options)
    var attended = scaledDotProductAttention(
      query: query, key: toK(context.states, options: options),
      value: toV(context.states, options: options), heads: heads, options: options)
    if let guidance = context.guidance {
      let rows = guidance.rows
      let before = rows.lowerBound
      let after = attended.shape[0] - rows.upperBound
      let sizes = [before, rows.count, after]
      let guidedQuery = split(query, sizes: sizes, axis: 0)[1]
      var parts = split(attended, sizes: sizes, axis: 0)
      let negatives = guidance.negativeStates.map { states in
        let repeated = concatenate(Array(repeating: states, count: rows.count), axis: 0)
        return scaledDotProductAttention(
          query: guidedQuery, key: toK(repeated, options: options),
          value: toV(repeated, options: options), heads: heads, options: options)
      }
      parts[1] = guidance.guide(positive: parts[1], negatives: negatives)
      attended = concatenate(parts.filter { $0.shape[0] > 0 }, axis: 0)
    }
    return toOut(attended, options: options)
  }

  /// Self-attention when `states` is nil, attention on `states` `[b, s, contextDim]` otherwise.
  /// Self-attention is row-wise, so repeated batch rows (CFG's two rows before the first
  /// cross-attention) are computed once.
  public func callAsFunction(
    _ x: Tensor, states: Tensor? = nil, options: ComputeOptions
  ) -> Tensor {
    guard let states else {
      return onDistinctRows(x) { rows in attend(rows, to: rows, options: options) }
    }
    return attend(x, to: states, options: options)
  }

  private func attend(_ x: Tensor, to source: Tensor, options: ComputeOptions) -> Tensor {
    let attended = scaledDotProductAttention(
      query: toQ(x, options: options), key: toK(source, options: options),
      value: toV(source, options: options),
      heads: heads, options: options)
    return toOut(attended, options: options)
  }
}

/// What the UNet's cross-attention layers attend to, passed unchanged through its blocks: the
/// text states of each batch row `[b, tokens, crossAttentionDim]`, and optionally a guidance that
/// acts inside every cross-attention layer.
public struct CrossAttentionContext: Sendable {
  /// The text encoder's output for each row of the UNet batch.
  public var states: Tensor
  /// A rule that steers some rows in attention space (Normalized Attention Guidance).
  public var guidance: (any AttentionGuidance)?

  /// The text states `[b, tokens, crossAttentionDim]`, and the attention guidance if any.
  public init(_ states: Tensor, guidance: (any AttentionGuidance)? = nil) {
    self.states = states
    self.guidance = guidance
  }
}

/// A guidance that acts in every cross-attention layer: its rows also attend, with the same
/// queries, to the states of each negative prompt, and `guide` combines the outputs
/// (`[rows, tokens, heads·d]`, before `to_out`). The rule itself lives with the other guidance
/// rules in SDPipeline.
public protocol AttentionGuidance: Sendable {
  /// The batch rows it steers.
  var rows: Range<Int> { get }
  /// Each negative prompt's states, `[1, tokens, crossAttentionDim]`.
  var negativeStates: [Tensor] { get }
  /// The guided attention output of `rows` from their own (`positive`) and one per negative.
  func guide(positive: Tensor, negatives: [Tensor]) -> Tensor
}

// The UNet batch of every step of a generation, laid out from its `Guidance` and its encoded
// prompts, and the split and combination of the batch's predictions: the path a negative prompt
// takes from text rows to the guided noise prediction.

import SDModels
import SDTensor

/// The rows of a generation's UNet calls and how their predictions become the guided one.
struct GuidancePlan {
  /// The rows of one UNet call: `[unconditional?, negatives..., positive]`.
  struct Batch {
    /// The text states of the rows, `[rows, tokens, hidden]`.
    let context: CrossAttentionContext
    /// Whether row 0 is the empty prompt's (ε_∅).
    let hasUnconditional: Bool
    /// The weights of the negative rows that follow it.
    let negativeWeights: [Float]
    /// SDXL: each row's pooled text embedding, `[rows, pooled]`.
    let pooled: Tensor?
    var count: Int { context.states.shape[0] }
  }

  let guidance: Guidance
  /// The rows while the negative prompts apply, and outside their steps.
  let inside: Batch
  let outside: Batch
  /// The positive row alone: after the CFG cutoff.
  let positiveOnly: Batch

  init(_ guidance: Guidance, prompts: EncodedPrompts) {
    self.guidance = guidance
    attentionNegatives = guidance.rule == .nag ? prompts.negatives : []
    let pooled = prompts.pooled
    func batch(_ rows: [Tensor], pooled: [Tensor?], unconditional: Bool, weights: [Float])
      -> Batch
    {
      let pooledRows = pooled.compactMap { $0 }
      return Batch(
        context: CrossAttentionContext(concatenate(rows, axis: 0)),
        hasUnconditional: unconditional, negativeWeights: weights,
        pooled: pooledRows.count == rows.count ? concatenate(pooledRows, axis: 0) : nil)
    }
    let emptyAndPositive = prompts.empty.map {
      batch(
        [$0, prompts.positive], pooled: [pooled?.empty, pooled?.positive], unconditional: true,
        weights: [])
    }
    positiveOnly = batch(
      [prompts.positive], pooled: [pooled?.positive], unconditional: false, weights: [])
    if !guidance.usesNegativeBranch {
      inside = positiveOnly
    } else if prompts.negatives.isEmpty, let emptyAndPositive {
      inside = emptyAndPositive
    } else {
      // Perp-Neg measures every direction from the empty prompt's prediction.
      let reference = guidance.rule == .perpNeg ? prompts.empty : nil
      inside = batch(
        [reference].compactMap { $0 } + prompts.negatives.map(\.states) + [prompts.positive],
        pooled: (reference == nil ? [] : [pooled?.empty])
          + (pooled?.negatives ?? prompts.negatives.map { _ in nil }) + [pooled?.positive],
        unconditional: reference != nil, weights: prompts.negatives.map(\.weight))
    }
    outside = emptyAndPositive ?? inside
  }

  /// The negatives NAG steers away from, in cross-attention (`rule == .nag`).
  let attentionNegatives: [(states: Tensor, weight: Float)]

  /// The rows of 1-based `step` of `totalSteps`, with NAG on the prompt's row where it acts.
  func batch(atStep step: Int, of totalSteps: Int) -> Batch {
    var rows = guidance.negativeSteps.map { $0.contains(step) ? inside : outside } ?? inside
    // diffusers' callback drops the guidance after 0-based step int(N · ratio) has run; the
    // ratio is read as the decimal the user wrote (Float 0.7 is 0.69999999), as Python has it.
    if let cutoff = guidance.cutoff {
      let ratio = Double("\(cutoff)") ?? Double(cutoff)
      if step > Int(Double(totalSteps) * ratio) + 1 { rows = positiveOnly }
    }
    guard guidance.rule == .nag, !attentionNegatives.isEmpty, guidance.nag.applies(atStep: step)
    else { return rows }
    // NAG steers the positive row, the last; classifier-free rows before it are left as they are.
    let nag = NAGAttention(
      settings: guidance.nag, rows: rows.count - 1..<rows.count,
      negativeStates: attentionNegatives.map(\.states), weights: attentionNegatives.map(\.weight))
    return Batch(
      context: CrossAttentionContext(rows.context.states, guidance: nag),
      hasUnconditional: rows.hasUnconditional, negativeWeights: rows.negativeWeights,
      pooled: rows.pooled)
  }

  /// Splits the UNet output of `batch` by row and applies the guidance.
  func guidedPrediction(_ prediction: Tensor, of batch: Batch) -> Tensor {
    let parts = chunk(prediction, batch.count, axis: 0)
    guard batch.count > 1 else { return parts[0] }
    let negativeStart = batch.hasUnconditional ? 1 : 0
    let negatives = batch.negativeWeights.enumerated().map {
      (prediction: parts[negativeStart + $0.offset], weight: $0.element)
    }
    return guidance.combine(
      unconditional: batch.hasUnconditional ? parts[0] : nil, negatives: negatives,
      positive: parts[batch.count - 1])
  }
}

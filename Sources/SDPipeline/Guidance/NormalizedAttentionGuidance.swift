// Normalized Attention Guidance (Chen et al. 2025, "Normalized Attention Guidance: Universal
// Negative Guidance for Diffusion Models", arXiv 2505.21179, algorithm 1): the negative prompt
// acts inside every cross-attention layer instead of in the noise prediction, so it works at
// guidance scale 1, where few-step models (LCM, Turbo, TCD) run and CFG does nothing. For the
// same queries, the prompt's attention output Z⁺ and the negative prompt's Z⁻ give, per token,
//   Z̃ = φ·Z⁺ − (φ − 1)·Z⁻            (extrapolation; φ = the NAG scale, 1 = off)
//   Z̃ ← Z̃ · min(r, τ) / r, r = ‖Z̃‖₁ / ‖Z⁺‖₁   (L1 normalisation, over the channels)
//   Ẑ = α·Z̃ + (1 − α)·Z⁺                (blend)
// before `to_out`. φ follows the official implementation (ChenDarYen/Normalized-Attention-Guidance,
// ComfyUI's NAG nodes), where nag_scale multiplies Z⁺; the paper's Z⁺ + s·(Z⁺ − Z⁻) is s = φ − 1.
// Several negatives act through the weighted mean of their Z⁻, as in classifier-free guidance.

import SDModels
import SDTensor

/// The settings of NAG (`--guidance nag`).
public struct NormalizedAttentionGuidance: Sendable, Equatable {
  /// φ: how far Z⁺ is pushed away from Z⁻ (official default 5; ≤ 1 turns NAG off).
  public var scale: Float
  /// τ: the largest L1 norm ratio of Z̃ to Z⁺ (2.5).
  public var tau: Float
  /// α: the blend of Z̃ into Z⁺ (0.25).
  public var alpha: Float
  /// The 1-based steps NAG acts in; nil: every step.
  public var steps: ClosedRange<Int>?

  /// NAG with its scale φ, τ, α and step window (defaults φ 5, τ 2.5, α 0.25, every step).
  public init(
    scale: Float = 5, tau: Float = 2.5, alpha: Float = 0.25, steps: ClosedRange<Int>? = nil
  ) {
    (self.scale, self.tau, self.alpha, self.steps) = (scale, tau, alpha, steps)
  }

  /// - Throws: `PipelineError.invalidArgument` naming the setting out of range.
  func validate() throws(PipelineError) {
    guard scale.isFinite, scale >= 0 else {
      throw .invalidArgument(name: "nag.scale", reason: "must be a number >= 0, got \(scale)")
    }
    guard tau.isFinite, tau >= 1 else {
      throw .invalidArgument(name: "nag.tau", reason: "must be a number >= 1, got \(tau)")
    }
    guard alpha.isFinite, alpha >= 0, alpha <= 1 else {
      throw .invalidArgument(name: "nag.alpha", reason: "must be in [0, 1], got \(alpha)")
    }
    if let steps, steps.lowerBound < 1 {
      throw .invalidArgument(name: "nag.steps", reason: "steps count from 1, got \(steps)")
    }
  }

  /// Whether NAG acts at 1-based `step`.
  func applies(atStep step: Int) -> Bool {
    scale > 1 && (steps?.contains(step) ?? true)
  }
}

/// NAG for one UNet call: the rows it steers and the negatives' states.
struct NAGAttention: AttentionGuidance {
  let settings: NormalizedAttentionGuidance
  let rows: Range<Int>
  let negativeStates: [Tensor]
  let weights: [Float]

  func guide(positive: Tensor, negatives: [Tensor]) -> Tensor {
    let negative = weightedMean(zip(negatives, weights).map { ($0, $1) }) ?? positive
    let (phi, tau, alpha) = (settings.scale, settings.tau, settings.alpha)
    let width = positive.shape[positive.rank - 1]
    var out = positive.scalars
    for start in stride(from: 0, to: positive.count, by: width) {
      let range = start..<start + width
      var guided = [Float](repeating: 0, count: width)
      var (positiveNorm, guidedNorm) = (0.0, 0.0)
      for (j, i) in range.enumerated() {
        guided[j] = positive.scalars[i] * phi - negative.scalars[i] * (phi - 1)
        positiveNorm += Double(abs(positive.scalars[i]))
        guidedNorm += Double(abs(guided[j]))
      }
      let ratio = positiveNorm > 0 ? guidedNorm / positiveNorm : 1
      let factor = ratio > Double(tau) ? Float(Double(tau) / ratio) : 1
      for (j, i) in range.enumerated() {
        out[i] = guided[j] * factor * alpha + positive.scalars[i] * (1 - alpha)
      }
    }
    return Tensor(shape: positive.shape, scalars: out)
  }
}

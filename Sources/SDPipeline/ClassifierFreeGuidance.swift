// The guidance layer: how the UNet's predictions for the negative and the positive prompt become
// the one noise prediction a scheduler steps with (Ho & Salimans 2022, "Classifier-Free
// Diffusion Guidance"). This is where a negative prompt acts.
//
// Convention, written down once: the UNet runs ONE batched pass over [negative, positive] (the
// order of diffusers, ml-stable-diffusion, candle and tinygrad), and the guided prediction is
// negative + scale · (positive − negative). Without a negative prompt the negative row is the
// encoding of the empty prompt "", exactly as diffusers does, never zeros.

import SDTensor

/// Classifier-free guidance with an optional rescale (Lin et al. 2023, "Common Diffusion Noise
/// Schedules and Sample Steps are Flawed", eq. 15–16; diffusers' `guidance_rescale`).
public struct ClassifierFreeGuidance: Sendable, Equatable {
  /// s in u + s·(c − u); 7.5 is the SD default. At s ≤ 1 the negative branch is skipped.
  public var scale: Float
  /// φ in [0, 1]: blends the guided prediction with one rescaled to the positive prediction's
  /// standard deviation, which counters over-exposure at high scales. 0 disables it.
  public var rescale: Float

  /// - Throws: `PipelineError.invalidArgument` for a non-finite scale or φ outside [0, 1].
  public init(scale: Float, rescale: Float = 0) throws(PipelineError) {
    guard scale.isFinite else {
      throw .invalidArgument(name: "guidanceScale", reason: "must be a finite number, got \(scale)")
    }
    guard rescale.isFinite, rescale >= 0, rescale <= 1 else {
      throw .invalidArgument(name: "guidanceRescale", reason: "must be in [0, 1], got \(rescale)")
    }
    self.scale = scale
    self.rescale = rescale
  }

  /// Whether the negative (unconditional) branch is computed at all: diffusers'
  /// `do_classifier_free_guidance = guidance_scale > 1`. At s ≤ 1 only the positive prompt runs,
  /// half the UNet work.
  public var usesNegativeBranch: Bool { scale > 1 }

  /// The UNet input for one step: `[2n, ...]` = [latents, latents] for the [negative, positive]
  /// rows, or the latents alone when the negative branch is skipped.
  public func modelInput(_ latents: Tensor) -> Tensor {
    usesNegativeBranch ? concatenate([latents, latents], axis: 0) : latents
  }

  /// Combines the UNet output of `modelInput` into the guided prediction `[n, ...]`.
  public func guidedPrediction(_ prediction: Tensor) -> Tensor {
    guard usesNegativeBranch else { return prediction }
    let halves = chunk(prediction, 2, axis: 0)
    return combine(negative: halves[0], positive: halves[1])
  }

  /// negative + scale · (positive − negative), then the φ-rescale when enabled.
  public func combine(negative: Tensor, positive: Tensor) -> Tensor {
    let guided = negative + scale * (positive - negative)
    guard rescale > 0 else { return guided }
    return rescaled(guided, toMatch: positive)
  }

  /// diffusers' `rescale_noise_cfg`: per batch item, scale `guided` to the standard deviation
  /// (unbiased, over all non-batch axes) of `positive`, and blend by φ.
  func rescaled(_ guided: Tensor, toMatch positive: Tensor) -> Tensor {
    let items = guided.shape[0]
    let size = guided.count / items
    var out = guided.scalars
    for item in 0..<items {
      let range = item * size..<(item + 1) * size
      let ratio =
        standardDeviation(positive.scalars[range]) / standardDeviation(guided.scalars[range])
      for i in range {
        let value = guided.scalars[i]
        out[i] = rescale * (value * Float(ratio)) + (1 - rescale) * value
      }
    }
    return Tensor(shape: guided.shape, scalars: out)
  }

  private func standardDeviation(_ values: ArraySlice<Float>) -> Double {
    let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
    let squares = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
    return (squares / Double(max(1, values.count - 1))).squareRoot()
  }
}

/// One of several negative prompts and its weight.
public struct NegativePrompt: Sendable, Equatable {
  public var text: String
  /// Relative weight among the negative prompts (> 0).
  public var weight: Float

  public init(_ text: String, weight: Float = 1) {
    self.text = text
    self.weight = weight
  }
}

/// How negative predictions enter the guided one.
public enum GuidanceRule: String, Sendable, CaseIterable {
  /// Classifier-free guidance; several negatives act through their weighted mean:
  /// ε = ε̄ + s·(ε_pos − ε̄), ε̄ = Σ wᵢ·εᵢ / Σ wᵢ.
  case classifierFree = "cfg"
  /// Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm"): each
  /// negative direction loses its component along the positive one before it is subtracted,
  /// so what both prompts share is kept: ε = ε_∅ + s·[d_pos − Σ wᵢ·(dᵢ − (dᵢ·d_pos / |d_pos|²)·d_pos)],
  /// d = ε − ε_∅, per batch item (the paper's negative weight is s·wᵢ).
  case perpNeg = "perp-neg"
}

extension ClassifierFreeGuidance {
  /// Combines the predictions of several text rows into the guided prediction.
  /// - Parameters:
  ///   - unconditional: ε_∅ of the empty prompt; required by Perp-Neg, and used by
  ///     classifier-free guidance when there are no negatives.
  ///   - negatives: each negative prompt's prediction and weight.
  public func combine(
    unconditional: Tensor?, negatives: [(prediction: Tensor, weight: Float)], positive: Tensor,
    rule: GuidanceRule
  ) -> Tensor {
    switch rule {
    case .classifierFree:
      guard let first = negatives.first else {
        precondition(unconditional != nil, "classifier-free guidance without a negative row")
        return combine(negative: unconditional ?? positive, positive: positive)
      }
      if negatives.count == 1 { return combine(negative: first.prediction, positive: positive) }
      let total = negatives.reduce(Float(0)) { $0 + $1.weight }
      var mean = first.prediction * (first.weight / total)
      for negative in negatives.dropFirst() {
        mean.add(negative.prediction * (negative.weight / total))
      }
      return combine(negative: mean, positive: positive)
    case .perpNeg:
      guard let unconditional else {
        preconditionFailure("Perp-Neg needs the unconditional prediction")
      }
      let direction = positive - unconditional
      var guided = direction
      for negative in negatives {
        let perpendicular = perpendicularPart(negative.prediction - unconditional, to: direction)
        guided.add(perpendicular * -negative.weight)
      }
      let result = unconditional + scale * guided
      return rescale > 0 ? rescaled(result, toMatch: positive) : result
    }
  }

  /// x − (x·y / |y|²)·y for each batch item (all non-batch axes flattened).
  func perpendicularPart(_ x: Tensor, to y: Tensor) -> Tensor {
    let items = x.shape[0]
    let size = x.count / items
    var out = x.scalars
    for item in 0..<items {
      let range = item * size..<(item + 1) * size
      var dot = 0.0
      var norm = 0.0
      for i in range {
        dot += Double(x.scalars[i]) * Double(y.scalars[i])
        norm += Double(y.scalars[i]) * Double(y.scalars[i])
      }
      let projection = norm > 0 ? Float(dot / norm) : 0
      for i in range { out[i] = x.scalars[i] - projection * y.scalars[i] }
    }
    return Tensor(shape: x.shape, scalars: out)
  }
}

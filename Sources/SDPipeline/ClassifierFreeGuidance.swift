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
    guard scale.isFinite else { throw .invalidArgument(name: "guidanceScale", reason: "must be a finite number, got \(scale)") }
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
      let ratio = standardDeviation(positive.scalars[range]) / standardDeviation(guided.scalars[range])
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

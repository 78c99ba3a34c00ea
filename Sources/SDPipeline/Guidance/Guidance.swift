// The guidance layer: how the UNet's predictions for the negative and the positive prompt become
// the one noise prediction a sampler steps with. This is where a negative prompt acts. One value,
// `Guidance`, owns a generation's guidance settings; `GuidancePlan` lays out the UNet batch from
// them and combines its predictions; the rules' maths live beside them in this folder.
//
// Convention, written down once: the UNet runs ONE batched pass over the text rows
// [unconditional?, negatives..., positive] (negative first, as diffusers, ml-stable-diffusion,
// candle and tinygrad do), and classifier-free guidance is negative + scale · (positive −
// negative). Without a negative prompt the negative row is the encoding of the empty prompt "",
// exactly as diffusers does, never zeros.

import SDTensor

/// How a generation is guided by its prompts (Ho & Salimans 2022, "Classifier-Free Diffusion
/// Guidance", and the rules of `GuidanceRule`).
public struct Guidance: Sendable, Equatable {
  /// SD's default scale, the one place it is written.
  public static let defaultScale: Float = 7.5

  /// s in u + s·(c − u). At s ≤ 1 the negative branch is skipped (diffusers'
  /// `do_classifier_free_guidance = guidance_scale > 1`): only the positive row runs.
  public var scale: Float
  /// φ in [0, 1] of guidance rescale (Lin et al. 2023, eq. 15–16; diffusers' `guidance_rescale`):
  /// blends the guided prediction with one rescaled to the positive prediction's standard
  /// deviation, which counters over-exposure at high scales. 0 disables it.
  public var rescale: Float
  /// How negative predictions are combined with the positive one.
  public var rule: GuidanceRule
  /// The 1-based steps during which the negative prompts apply; outside them the empty prompt
  /// does (keeps the composition, removes details, or the other way round). nil: every step.
  public var negativeSteps: ClosedRange<Int>?
  /// The settings of Normalized Attention Guidance, used with `rule == .nag`.
  public var nag: NormalizedAttentionGuidance
  /// CFG cutoff: the fraction of the steps after which only the positive row runs, unguided
  /// (diffusers' `SDCFGCutoffCallback(cutoff_step_ratio:)`: with N steps, steps after
  /// ⌊N · cutoff⌋ + 1 run one row instead of two; Castillo et al. 2023 report the late steps
  /// barely need guidance). nil: guidance in every step.
  public var cutoff: Float?

  /// Guidance of `scale` by `rule`; by default no rescale and negatives in every step.
  public init(
    scale: Float = Guidance.defaultScale, rescale: Float = 0,
    rule: GuidanceRule = .classifierFree, negativeSteps: ClosedRange<Int>? = nil,
    nag: NormalizedAttentionGuidance = NormalizedAttentionGuidance(), cutoff: Float? = nil
  ) {
    self.scale = scale
    self.rescale = rescale
    self.rule = rule
    self.negativeSteps = negativeSteps
    self.nag = nag
    self.cutoff = cutoff
  }

  /// Whether the negative rows of the UNet batch are computed at all (classifier-free
  /// guidance and Perp-Neg need them).
  public var usesNegativeBranch: Bool { scale > 1 }

  /// This guidance for a UNet that takes the scale as an input (full LCM checkpoints, as
  /// diffusers' `LatentConsistencyModelPipeline`): the scale acts inside the UNet, so no
  /// classifier-free rows run and negatives act only through NAG, which steers the prompt's row.
  public var withScaleEmbedded: Guidance {
    var embedded = self
    embedded.scale = 1
    return embedded
  }

  /// Whether the negative prompts are encoded: for the negative rows, or for NAG, which uses
  /// them inside cross-attention even when no negative row runs.
  public var usesNegativePrompts: Bool { usesNegativeBranch || rule == .nag }

  /// Whether the rows need the empty prompt's encoding: as the negative when there is none, as
  /// Perp-Neg's reference, and outside the negative-step window.
  func needsEmptyPrompt(hasNegatives: Bool) -> Bool {
    !hasNegatives || rule == .perpNeg || negativeSteps != nil
  }

  /// - Throws: `PipelineError.invalidArgument` naming the parameter that is out of range.
  public func validate() throws(PipelineError) {
    guard scale.isFinite else {
      throw .invalidArgument(name: "guidanceScale", reason: "must be a finite number, got \(scale)")
    }
    guard rescale.isFinite, rescale >= 0, rescale <= 1 else {
      throw .invalidArgument(name: "guidanceRescale", reason: "must be in [0, 1], got \(rescale)")
    }
    if let range = negativeSteps, range.lowerBound < 1 {
      throw .invalidArgument(name: "negativeSteps", reason: "steps count from 1, got \(range)")
    }
    if let cutoff, !(cutoff.isFinite && cutoff >= 0 && cutoff <= 1) {
      throw .invalidArgument(name: "guidance.cutoff", reason: "must be in [0, 1], got \(cutoff)")
    }
    if rule == .nag { try nag.validate() }
  }

  /// The guided prediction from one step's predictions: `unconditional` is ε_∅ of the empty
  /// prompt (needed by Perp-Neg, and the negative when there are no negatives), `negatives` each
  /// negative prompt's prediction and weight, `positive` the prompt's.
  public func combine(
    unconditional: Tensor?, negatives: [(prediction: Tensor, weight: Float)], positive: Tensor
  ) -> Tensor {
    let guided: Tensor
    switch negatives.isEmpty ? .classifierFree : rule {
    // NAG acts in attention; in noise space its negative rows (scale > 1) are plain CFG.
    case .classifierFree, .nag:
      let negative = weightedMean(negatives) ?? unconditional
      precondition(negative != nil, "classifier-free guidance without a negative row")
      guided = classifierFree(negative: negative ?? positive, positive: positive, scale: scale)
    case .perpNeg:
      guard let unconditional else {
        preconditionFailure("Perp-Neg needs the unconditional prediction")
      }
      guided = perpNeg(
        unconditional: unconditional, negatives: negatives, positive: positive, scale: scale)
    }
    return rescale > 0 ? rescaled(guided, toMatch: positive, by: rescale) : guided
  }
}

/// How negative predictions enter the guided one.
public enum GuidanceRule: String, Sendable, CaseIterable {
  /// Classifier-free guidance (ClassifierFreeGuidance.swift); several negatives act through
  /// their weighted mean.
  case classifierFree = "cfg"
  /// Perp-Neg (PerpNeg.swift): each negative direction loses its component along the positive
  /// one before it is subtracted, so what both prompts share is kept.
  case perpNeg = "perp-neg"
  /// Normalized Attention Guidance (NormalizedAttentionGuidance.swift): the negative prompts act
  /// in cross-attention, also at scale 1; with scale > 1, classifier-free guidance as well.
  case nag = "nag"
}

/// One of several negative prompts and its weight.
public struct NegativePrompt: Sendable, Equatable {
  /// The negative prompt's text (weights and embeddings in it as in any prompt).
  public var text: String
  /// Relative weight among the negative prompts (> 0).
  public var weight: Float

  /// A negative prompt of `weight` (1: as diffusers' single negative).
  public init(_ text: String, weight: Float = 1) {
    self.text = text
    self.weight = weight
  }
}

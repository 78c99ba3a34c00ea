// The guidance rules' arithmetic (Guidance/): classifier-free guidance with one and several
// negatives, Perp-Neg, rescale, and the validation of the settings.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct GuidanceTests {
  let negative = seededTensor([2, 3, 4], seed: 1)
  let positive = seededTensor([2, 3, 4], seed: 2)

  @Test func classifierFreeGuidanceSubtractsTheNegative() {
    let guided = Guidance(scale: 7.5).combine(
      unconditional: nil, negatives: [(negative, 1)], positive: positive)
    #expect(guided.shape == [2, 3, 4])
    for i in 0..<guided.count {
      let expected = negative.scalars[i] + 7.5 * (positive.scalars[i] - negative.scalars[i])
      #expect(abs(guided.scalars[i] - expected) <= 1e-5 * max(1, abs(expected)))
    }
    // Without negatives the unconditional row is the negative.
    let plain = Guidance(scale: 7.5).combine(
      unconditional: negative, negatives: [], positive: positive)
    #expect(plain == guided)
  }

  /// Several negatives act through their weighted mean ε̄ = Σ wᵢ·εᵢ / Σ wᵢ.
  @Test func severalNegativesUseTheirWeightedMean() {
    let other = seededTensor([2, 3, 4], seed: 3)
    let guidance = Guidance(scale: 4)
    let guided = guidance.combine(
      unconditional: nil, negatives: [(negative, 3), (other, 1)], positive: positive)
    for i in 0..<guided.count {
      let mean = 0.75 * negative.scalars[i] + 0.25 * other.scalars[i]
      let expected = mean + 4 * (positive.scalars[i] - mean)
      #expect(abs(guided.scalars[i] - expected) <= 1e-5 * max(1, abs(expected)))
    }
  }

  /// Perp-Neg removes only the part of a negative direction that is not along the positive one.
  @Test func perpNegRemovesThePerpendicularPart() {
    let guidance = Guidance(scale: 5, rule: .perpNeg)
    let unconditional = Tensor(shape: [1, 2], scalars: [0, 0])
    let positive = Tensor(shape: [1, 2], scalars: [1, 0])
    let parallel = Tensor(shape: [1, 2], scalars: [3, 0])
    let orthogonal = Tensor(shape: [1, 2], scalars: [0, 2])
    let withParallel = guidance.combine(
      unconditional: unconditional, negatives: [(parallel, 1)], positive: positive)
    #expect(withParallel.scalars == [5, 0])
    let withOrthogonal = guidance.combine(
      unconditional: unconditional, negatives: [(orthogonal, 0.5)], positive: positive)
    #expect(withOrthogonal.scalars == [5, -5])
  }

  /// With φ = 1 each item of the result has the positive prediction's standard deviation.
  @Test func fullRescaleMatchesPositiveStandardDeviation() {
    let negative = seededTensor([2, 4, 3, 3], seed: 4)
    let positive = seededTensor([2, 4, 3, 3], seed: 5)
    let guided = Guidance(scale: 9, rescale: 1).combine(
      unconditional: nil, negatives: [(negative, 1)], positive: positive)
    let size = 36
    for item in 0..<2 {
      let slice = { (t: Tensor) in Array(t.scalars[item * size..<(item + 1) * size]) }
      #expect(abs(standardDeviation(slice(guided)) - standardDeviation(slice(positive))) < 1e-4)
    }
  }

  @Test func rejectsOutOfRangeParameters() {
    #expect(!Guidance(scale: 1).usesNegativeBranch)
    #expect(Guidance(scale: 1.01).usesNegativeBranch)
    #expect(throws: PipelineError.self) { try Guidance(scale: .nan).validate() }
    #expect(throws: PipelineError.self) { try Guidance(scale: 7, rescale: 1.5).validate() }
    #expect(throws: PipelineError.self) { try Guidance(scale: 7, rescale: -0.1).validate() }
    #expect(throws: PipelineError.self) { try Guidance(negativeSteps: 0...3).validate() }
  }

  private func standardDeviation(_ values: [Float]) -> Double {
    let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
    let squares = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
    return (squares / Double(values.count - 1)).squareRoot()
  }
}

/// CFG cutoff against diffusers' SDCFGCutoffCallback (weights/make_guidance_fixtures.py): the
/// guided steps, then the positive row alone.
@Suite struct CFGCutoffTests {
  @Test(arguments: [
    ("cutoff_euler", SchedulerKind.euler, 6, Float(0.5)),
    ("cutoff_euler_a", .eulerAncestral, 5, 0.4),
  ])
  func matchesDiffusers(name: String, sampler: SchedulerKind, steps: Int, cutoff: Float) throws {
    var request = GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: "green tones", steps: steps,
      seed: 42, sampler: sampler, width: 64, height: 64)
    request.guidance.cutoff = cutoff
    let pipeline = try tinyPipeline.get()
    let outcome = try expectMatchesReference(
      pipeline, request, reference: try fixture("guidance-sd15.safetensors"), name: name)
    print("cfg cutoff \(name): max |Δ|/scale \(outcome.worst)")
    // The same run without the cutoff differs: the cutoff really acted.
    request.guidance.cutoff = nil
    let plain = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    let cut = try fixture("guidance-sd15.safetensors").tensor("\(name).latents.\(steps - 1)")
    #expect(compare(plain.latents, cut).maxAbsolute > 1e-3)
  }
}

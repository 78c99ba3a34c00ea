// Full LCM checkpoints, whose UNet takes the guidance scale as an input (`time_cond_proj_dim`),
// against diffusers' LatentConsistencyModelPipeline (weights/make_lcm_fixtures.py).

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let lcmPipeline = Result {
  try StableDiffusionPipeline(modelAt: fixturesDirectory.appendingPathComponent("tiny-lcm"))
}

@Suite struct LCMCheckpointTests {
  @Test func guidanceEmbeddingMatchesDiffusers() throws {
    let expected = try fixture("lcm-sd15.safetensors").tensor("guidance_embedding")
    let ours = guidanceScaleEmbedding([7.5, 1], dimension: 32)
    let difference = compare(ours, expected)
    #expect(difference.maxAbsolute < 1e-5, "\(difference)")
  }

  @Test(arguments: [
    ("lcm_4", 4, Float(8.5), false),
    ("lcm_1", 1, 8.5, false),
    ("lcm_scale_2", 3, 2, false),
    ("lcm_nag", 4, 8.5, true),
  ])
  func matchesDiffusers(name: String, steps: Int, scale: Float, nag: Bool) throws {
    let pipeline = try lcmPipeline.get()
    #expect(pipeline.unet.configuration.timeConditionDimension == 32)
    #expect(pipeline.defaultSampler == .lcm)
    let request = GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: nag ? "blurry" : nil, steps: steps,
      guidance: Guidance(scale: scale, rule: nag ? .nag : .classifierFree), seed: 42, width: 64,
      height: 64)
    let outcome = try expectMatchesReference(
      pipeline, request, reference: try fixture("lcm-sd15.safetensors"), name: name)
    print("lcm checkpoint \(name): max |Δ|/scale \(outcome.worst)")
  }

  /// The scale acts through the embedding: another scale gives another image, and a negative
  /// prompt under plain CFG (which runs no negative row here) is named as having no effect.
  @Test func scaleIsAnInputAndCFGNegativesAreWarnedAbout() throws {
    let pipeline = try lcmPipeline.get()
    let options = ComputeOptions(threadCount: 2)
    var request = GenerationRequest(
      prompt: "a red apple", steps: 2, guidance: Guidance(scale: 8.5), seed: 1, width: 64,
      height: 64)
    let first = try pipeline.generate(request, options: options).latents
    request.guidance.scale = 3
    #expect(
      compare(try pipeline.generate(request, options: options).latents, first).maxAbsolute > 1e-3)
    request.negativePrompt = "blurry"
    #expect(pipeline.warnings(for: request).contains { $0.contains("LCM checkpoint") })
    request.guidance.rule = .nag
    #expect(!pipeline.warnings(for: request).contains { $0.contains("no effect") })
  }
}

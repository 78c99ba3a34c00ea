// Level 2 end to end: our pipeline on the tiny SD 1.5-like fixture model against diffusers'
// StableDiffusionPipeline (weights/make_pipeline_fixtures.py): text embeddings, the latents
// after every step for every sampler, and the decoded image.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

/// Loaded once: the fixture model is small, and pipelines are immutable values.
let tinyPipeline = Result {
  try StableDiffusionPipeline(modelAt: fixturesDirectory.appendingPathComponent("tiny-sd15"))
}
let tinySD2Pipeline = Result {
  try StableDiffusionPipeline(modelAt: fixturesDirectory.appendingPathComponent("tiny-sd2"))
}
let pipelineReference = Result { try fixture("pipeline-sd15.safetensors") }

/// The settings of one recorded case (see CASES in make_pipeline_fixtures.py).
struct PipelineCase: Sendable, CustomStringConvertible {
  let name: String
  let sampler: SchedulerKind
  let negativePrompt: String?
  let guidanceScale: Float
  let guidanceRescale: Float
  let strength: Float?
  var description: String { name }
}

let pipelineCases: [PipelineCase] = [
  .init(
    name: "pndm", sampler: .pndm, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "ddim", sampler: .ddim, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "euler", sampler: .euler, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "euler_a", sampler: .eulerAncestral, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "dpmpp2m", sampler: .dpmSolverMultistep, negativePrompt: "green tones",
    guidanceScale: 7.5, guidanceRescale: 0, strength: nil),
  .init(
    name: "dpmpp2m_karras", sampler: .dpmSolverMultistepKarras, negativePrompt: "green tones",
    guidanceScale: 7.5, guidanceRescale: 0, strength: nil),
  .init(
    name: "dpmpp2m_sde_karras", sampler: .dpmSolverMultistepSDEKarras,
    negativePrompt: "green tones", guidanceScale: 7.5, guidanceRescale: 0, strength: nil),
  .init(
    name: "lms", sampler: .lms, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "pndm_no_negative", sampler: .pndm, negativePrompt: nil, guidanceScale: 7.5,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "ddim_rescale", sampler: .ddim, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0.7, strength: nil),
  .init(
    name: "euler_scale1", sampler: .euler, negativePrompt: "green tones", guidanceScale: 1,
    guidanceRescale: 0, strength: nil),
  .init(
    name: "img2img", sampler: .ddim, negativePrompt: "green tones", guidanceScale: 7.5,
    guidanceRescale: 0, strength: 0.75),
  .init(
    name: "img2img_euler_a", sampler: .eulerAncestral, negativePrompt: "green tones",
    guidanceScale: 7.5, guidanceRescale: 0, strength: 0.5),
]

@Suite("Pipeline matches diffusers end to end (pipeline-sd15.safetensors)")
struct PipelineReferenceTests {
  func request(for testCase: PipelineCase) throws -> GenerationRequest {
    var request = GenerationRequest(prompt: "a red apple on a wooden table")
    request.negativePrompt = testCase.negativePrompt
    request.steps = 4
    request.guidance.scale = testCase.guidanceScale
    request.guidance.rescale = testCase.guidanceRescale
    request.seed = 42
    request.sampler = testCase.sampler
    request.width = 64
    request.height = 64
    if let strength = testCase.strength {
      let pixels = try pipelineReference.get().tensor("img2img.init_image").scalars.map {
        UInt8($0)
      }
      request.initImage = RGBImage(width: 64, height: 64, pixels: pixels)
      request.strength = strength
    }
    return request
  }

  @Test("latents after every step and the decoded image", arguments: pipelineCases)
  func endToEnd(testCase: PipelineCase) throws {
    let outcome = try expectMatchesReference(
      try tinyPipeline.get(), try request(for: testCase), reference: try pipelineReference.get(),
      name: testCase.name)
    print("pipeline \(testCase.name): max |Δ|/scale \(outcome.worst)")
  }

  /// SD 2.x: the sampler comes from the model's scheduler config (Euler, v-prediction), the
  /// tokenizer pads with "!"; DDIM on the same v-prediction model.
  @Test(
    "SD 2.x-like model with v-prediction",
    arguments: [("sd2_euler_v", nil), ("sd2_ddim_v", .ddim)] as [(String, SchedulerKind?)])
  func sd2EndToEnd(name: String, sampler: SchedulerKind?) throws {
    let pipeline = try tinySD2Pipeline.get()
    #expect(pipeline.defaultSampler == .euler)
    var request = GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: "green tones", steps: 4, seed: 42)
    request.sampler = sampler
    request.width = 64
    request.height = 64
    #expect(
      try expectMatchesReference(
        pipeline, request, reference: try pipelineReference.get(), name: name
      ).steps == 4)
  }

  @Test("the negative prompt changes the result, and its embedding row comes first")
  func negativePromptMatters() throws {
    let pipeline = try tinyPipeline.get()
    let reference = try pipelineReference.get()
    let options = ComputeOptions(threadCount: 2)
    let (negative, _) = pipeline.encode(prompt: "green tones", options: options)
    let (positive, _) = pipeline.encode(prompt: "a red apple on a wooden table", options: options)
    let embeds = try reference.tensor("pndm.prompt_embeds")
    expectClose(concatenate([negative, positive], axis: 0), embeds, "pndm.prompt_embeds")
    let with = try reference.tensor("pndm.latents.4")
    let without = try reference.tensor("pndm_no_negative.latents.4")
    #expect(compare(with, without).maxAbsolute > 1e-3, "the references themselves must differ")
  }
}

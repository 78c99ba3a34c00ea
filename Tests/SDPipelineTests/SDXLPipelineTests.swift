// SDXL generations against diffusers' StableDiffusionXLPipeline on the tiny SDXL
// (weights/make_sdxl_fixtures.py): the negative prompt's rules (zeros without one, "" encoded,
// the negative's own pooled embedding), micro-conditioning, samplers, no CFG, and the rows the
// UNet receives at the first step.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

let tinySDXLPipeline = Result {
  try StableDiffusionPipeline(modelAt: fixturesDirectory.appendingPathComponent("tiny-sdxl"))
}

private func sdxlRequest(_ name: String) -> GenerationRequest {
  var request = GenerationRequest(
    prompt: "a red apple on a wooden table", steps: 3, guidance: Guidance(scale: 5), seed: 42,
    sampler: .euler, width: 64, height: 64)
  switch name {
  case "negative": request.negativePrompt = "green tones"
  case "empty_negative": request.negativePrompt = ""
  case "micro":
    request.negativePrompt = "green tones"
    request.sizeConditioning = SizeConditioning(
      originalSize: (width: 96, height: 128), cropTopLeft: (left: 4, top: 8),
      targetSize: (width: 64, height: 64))
    request.negativeSizeConditioning = SizeConditioning(
      originalSize: (width: 32, height: 32), targetSize: (width: 64, height: 64))
  case "euler_a":
    (request.negativePrompt, request.sampler, request.steps) = ("blurry", .eulerAncestral, 4)
  case "dpm_karras":
    (request.negativePrompt, request.sampler, request.steps) = (
      "green tones", .dpmSolverMultistepKarras, 4
    )
  case "guidance_1": (request.guidance.scale, request.steps) = (1, 2)
  case "negative_2":
    (request.prompt2, request.negativePrompt, request.negativePrompt2) = (
      "oil painting", "green tones", "blurry"
    )
  default: break
  }
  return request
}

@Suite struct SDXLPipelineTests {
  @Test(arguments: [
    "no_negative", "negative", "empty_negative", "micro", "euler_a", "dpm_karras", "guidance_1",
    "negative_2",
  ])
  func matchesDiffusers(name: String) throws {
    let pipeline = try tinySDXLPipeline.get()
    #expect(pipeline.defaultSampler == .euler)
    let outcome = try expectMatchesReference(
      pipeline, sdxlRequest(name), reference: try fixture("pipeline-sdxl.safetensors"), name: name)
    print("sdxl \(name): max |Δ|/scale \(outcome.worst)")
  }

  /// The prompt's states with a clip skip: `hidden_states[-(k + 2)]` of both encoders, the row
  /// diffusers passes at step 0. (diffusers keeps the negative at `[-2]` whatever the skip; we
  /// skip the same layers for both, as the web UIs do, so only the prompt's row is compared.)
  @Test func clipSkipTakesAnEarlierLayerOfBothEncoders() throws {
    let pipeline = try tinySDXLPipeline.get()
    let reference = try fixture("pipeline-sdxl.safetensors").tensor("clip_skip.step0.prompt_embeds")
    let (states, _) = pipeline.encode(
      prompt: "a red apple on a wooden table", clipSkip: 1, options: ComputeOptions(threadCount: 2))
    let row = Tensor(
      shape: [1, 77, 64], scalars: Array(reference.scalars[77 * 64..<2 * 77 * 64]))
    expectClose(states, row, "clip_skip positive row")
  }

  /// Without a negative prompt the unconditional row is zeros; with "" it is the encoding of "",
  /// which differs.
  @Test func emptyNegativeIsZerosOnlyWhenAbsent() throws {
    let reference = try fixture("pipeline-sdxl.safetensors")
    let zeros = try reference.tensor("no_negative.step0.prompt_embeds")
    #expect(zeros.scalars[0..<77 * 64].allSatisfy { $0 == 0 })
    let encoded = try reference.tensor("empty_negative.step0.prompt_embeds")
    #expect(!encoded.scalars[0..<77 * 64].allSatisfy { $0 == 0 })
    let pipeline = try tinySDXLPipeline.get()
    #expect(pipeline.forcesZerosForEmptyPrompt)
  }

  /// An SDXL embedding file holds `clip_l` and `clip_g` vectors under the file's name; each
  /// encoder takes its own. Made of the two encoders' rows for "cat", the word must generate
  /// exactly what "cat" does (the tiny encoders have one width, so only the keys can route).
  @Test func embeddingsReachEachEncoderByKey() throws {
    let pipeline = try tinySDXLPipeline.get()
    let cat = try #require(pipeline.tokenizer.encode("cat", addSpecialTokens: false).first)
    let rows = [pipeline.textEncoder, try #require(pipeline.textEncoder2)].map {
      $0.tokenEmbeddings([cat]).reshaped([1, $0.configuration.hiddenSize])
    }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "sdxl-ti-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let file = folder.appendingPathComponent("kitty_v2.safetensors")
    try SafeTensorsWriter.write(["clip_l": rows[0], "clip_g": rows[1]], to: file.path)
    let embeddings = try TextualInversion.load(contentsOf: file)
    #expect(embeddings.map(\.name) == ["kitty_v2", "kitty_v2"])
    #expect(Set(embeddings.compactMap(\.encoderIndex)) == [0, 1])
    var request = sdxlRequest("negative")
    request.steps = 1
    request.prompt = "a photo of a kitty_v2"
    request.embeddings = embeddings
    #expect(pipeline.warnings(for: request).isEmpty)
    let options = ComputeOptions(threadCount: 2)
    let withEmbedding = try pipeline.generate(request, options: options).latents
    request.prompt = "a photo of a cat"
    request.embeddings = []
    #expect(withEmbedding == (try pipeline.generate(request, options: options).latents))
  }

  /// Several weighted negatives, Perp-Neg and a 3-chunk prompt run on SDXL: every negative row
  /// carries its pooled embedding, and each changes the image.
  @Test func negativesPerpNegAndLongPromptsRun() throws {
    let pipeline = try tinySDXLPipeline.get()
    let options = ComputeOptions(threadCount: 2)
    var request = sdxlRequest("negative")
    request.steps = 2
    let one = try pipeline.generate(request, options: options).latents
    request.negativePrompts = [NegativePrompt("blurry", weight: 0.5)]
    let two = try pipeline.generate(request, options: options).latents
    #expect(compare(one, two).maxAbsolute > 1e-4)
    request.guidance.rule = .perpNeg
    let perpendicular = try pipeline.generate(request, options: options).latents
    #expect(compare(two, perpendicular).maxAbsolute > 1e-4)
    request.prompt = Array(repeating: "a red apple on a wooden table", count: 25).joined(
      separator: ", ")
    let long = try pipeline.generate(request, options: options)
    #expect(long.truncatedTokens.positive.isEmpty)
    #expect(long.latents.scalars.allSatisfy { $0.isFinite })
  }

  /// A second prompt of another length than the first is padded with its encoder's empty chunks.
  @Test func secondPromptsOfOtherLengthsArePadded() throws {
    let pipeline = try tinySDXLPipeline.get()
    var request = sdxlRequest("negative")
    request.steps = 1
    request.prompt2 = Array(repeating: "oil painting", count: 40).joined(separator: ", ")
    let result = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    #expect(result.latents.scalars.allSatisfy { $0.isFinite })
  }

  @Test func sizeConditioningTimeIDs() {
    let micro = sdxlRequest("micro")
    #expect(micro.sizeConditioning.timeIDs(width: 64, height: 64) == [128, 96, 8, 4, 64, 64])
    #expect(SizeConditioning().timeIDs(width: 96, height: 64) == [64, 96, 0, 0, 64, 96])
  }
}

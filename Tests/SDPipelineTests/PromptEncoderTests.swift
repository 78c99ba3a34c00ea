// Prompts as people write them: attention weights, long prompts in chunks, textual-inversion
// embeddings (against weights/make_prompt_fixtures.py), and several / scheduled / Perp-Neg
// negative prompts in whole generations.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let promptReference = Result { try fixture("prompts-sd15.safetensors") }

private func jsonList(_ key: String) throws -> [JSONValue] {
  let metadata = try promptReference.get().metadata
  return try JSONValue.parse(Array((metadata[key] ?? "[]").utf8)).arrayValue ?? []
}

@Suite struct PromptEncoderTests {
  func encoder(embeddings: [TextualInversion] = []) throws -> PromptEncoder {
    let pipeline = try tinyPipeline.get()
    return try PromptEncoder(
      tokenizer: pipeline.tokenizer, textEncoder: pipeline.textEncoder, embeddings: embeddings)
  }

  @Test func parsesWeightsAsTheWebUIs() throws {
    let prompts = try jsonList("weighted").compactMap(\.stringValue)
    let parsed = try jsonList("parsed")
    #expect(prompts.count == parsed.count && prompts.count >= 10)
    for (prompt, expected) in zip(prompts, parsed) {
      let fragments = WeightedPrompt(parsing: prompt).fragments
      let pairs = (expected.arrayValue ?? []).map { $0.arrayValue ?? [] }
      let texts = pairs.map { $0.first?.stringValue ?? "" }
      let weights = pairs.map { Float($0.last?.doubleValue ?? 0) }
      #expect(fragments.map(\.text) == texts, "\(prompt)")
      #expect(
        zip(fragments.map(\.weight), weights).allSatisfy { abs($0 - $1) <= 1e-6 * $1 }, "\(prompt)")
    }
  }

  @Test func weightedAndLongPromptsMatchTheReference() throws {
    let encoder = try encoder()
    let reference = try promptReference.get()
    for (index, prompt) in try jsonList("weighted").compactMap(\.stringValue).enumerated() {
      let encoded = encoder.encode(prompt, options: ComputeOptions(threadCount: 2))
      expectClose(encoded.embeddings, try reference.tensor("weighted.\(index)"), prompt)
      #expect(encoded.cutTokens.isEmpty)
    }
  }

  /// Without weights, embeddings or long text the encoder is diffusers' encode_prompt exactly.
  @Test func plainPromptsEncodeAsDiffusers() throws {
    let pipeline = try tinyPipeline.get()
    let options = ComputeOptions(threadCount: 2)
    for prompt in ["a red apple on a wooden table", "", "green tones"] {
      #expect(
        try encoder().encode(prompt, options: options).embeddings
          == pipeline.encode(prompt: prompt, options: options).0)
    }
  }

  @Test func textualInversionMatchesDiffusers() throws {
    let folder = fixturesDirectory.appendingPathComponent("embeddings")
    let embeddings = try ["bad-hands", "cat-toy"].flatMap {
      try TextualInversion.load(contentsOf: folder.appendingPathComponent("\($0).safetensors"))
    }
    #expect(embeddings.map(\.name) == ["bad-hands", "cat-toy"])
    #expect(embeddings.map { $0.vectors.shape[0] } == [2, 1])
    let encoder = try encoder(embeddings: embeddings)
    let reference = try promptReference.get()
    for (index, prompt) in try jsonList("embedding_prompts").compactMap(\.stringValue).enumerated()
    {
      expectClose(
        encoder.encode(prompt, options: ComputeOptions(threadCount: 2)).embeddings,
        try reference.tensor("embedding.\(index)"), prompt)
    }
  }

  /// The same vectors saved by torch.save (A1111's .pt, diffusers' learned_embeds.bin) condition
  /// a prompt exactly as the safetensors files do; a .pt whose pickle calls posix.system is
  /// refused naming it.
  @Test func torchEmbeddingsMatchTheSafetensorsOnes() throws {
    let folder = fixturesDirectory.appendingPathComponent("embeddings")
    func load(_ names: [String]) throws -> [TextualInversion] {
      try names.flatMap { try TextualInversion.load(contentsOf: folder.appendingPathComponent($0)) }
    }
    let fromTorch = try load(["bad-hands.pt", "learned_embeds.bin"])
    let fromSafetensors = try load(["bad-hands.safetensors", "cat-toy.safetensors"])
    #expect(fromTorch.map(\.name) == ["bad-hands", "cat-toy"])
    #expect(fromTorch.map(\.vectors) == fromSafetensors.map(\.vectors))
    let torchEncoder = try encoder(embeddings: fromTorch)
    let safetensorsEncoder = try encoder(embeddings: fromSafetensors)
    let options = ComputeOptions(threadCount: 2)
    for prompt in try jsonList("embedding_prompts").compactMap(\.stringValue) {
      #expect(
        torchEncoder.encode(prompt, options: options).embeddings
          == safetensorsEncoder.encode(prompt, options: options).embeddings, "\(prompt)")
    }
    let half = try load(["bad-hands-fp16.pt"])
    #expect(half.map(\.name) == ["bad-hands-fp16"])
    let rounded = fromSafetensors[0].vectors.scalars.map { Float(Float16($0)) }
    #expect(half[0].vectors.scalars == rounded)
    #expect {
      _ = try load(["evil.pt"])
    } throws: { error in
      guard case .invalidArgument(_, let reason) = error as? PipelineError else { return false }
      return reason.contains("the pickle calls posix.system")
    }
  }

  @Test func embeddingFilesAreChecked() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "ti-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let pickle = folder.appendingPathComponent("bad.pt")
    try Data([0x80, 0x02]).write(to: pickle)
    #expect {
      _ = try TextualInversion.load(contentsOf: pickle)
    } throws: { error in
      guard case .invalidArgument(_, let reason) = error as? PipelineError else { return false }
      return reason.contains("pickle")
    }
    let wide = folder.appendingPathComponent("wide.safetensors")
    try SafeTensorsWriter.write(["emb_params": Tensor(zeros: [1, 768])], to: wide.path)
    let loaded = try TextualInversion.load(contentsOf: wide)
    #expect(throws: PipelineError.self) { _ = try encoder(embeddings: loaded) }
  }
}

@Suite struct NegativePromptTests {
  let options = ComputeOptions(threadCount: 2)

  func request(_ negative: String? = "green tones") -> GenerationRequest {
    GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: negative, steps: 3, seed: 42,
      sampler: .ddim, width: 64, height: 64)
  }

  @Test func weightedNegativesCombineAsTheirMean() throws {
    let pipeline = try tinyPipeline.get()
    let single = try pipeline.generate(request(), options: options)
    var twice = request(nil)
    twice.negativePrompts = [
      NegativePrompt("green tones", weight: 0.3), NegativePrompt("green tones", weight: 0.7),
    ]
    let repeated = try pipeline.generate(twice, options: options)
    #expect(compare(repeated.latents, single.latents).isWithin(1e-5))
    var mixed = request()
    mixed.negativePrompts = [NegativePrompt("blur", weight: 0.5)]
    #expect(try pipeline.generate(mixed, options: options).image != single.image)
  }

  @Test func negativeScheduleSwapsInTheEmptyPrompt() throws {
    let pipeline = try tinyPipeline.get()
    let always = try pipeline.generate(request(), options: options)
    let none = try pipeline.generate(request(nil), options: options)
    var everyStep = request()
    everyStep.guidance.negativeSteps = 1...3
    #expect(try pipeline.generate(everyStep, options: options).latents == always.latents)
    // A window after the last step would apply nothing: refused rather than run silently.
    var never = request()
    never.guidance.negativeSteps = 10...20
    #expect(throws: PipelineError.self) { _ = try pipeline.generate(never, options: options) }
    var late = request()
    late.guidance.negativeSteps = 2...3
    let partial = try pipeline.generate(late, options: options).latents
    #expect(partial != always.latents && partial != none.latents)
  }

  @Test func longNegativeAgainstShortPrompt() throws {
    let pipeline = try tinyPipeline.get()
    var long = request(
      Array(repeating: "blurry, lowres, bad hands", count: 30).joined(separator: ", "))
    long.steps = 2
    let result = try pipeline.generate(long, options: options)
    #expect(result.truncatedTokens.negative.isEmpty)
    long.truncatePrompts = true
    #expect(try pipeline.generate(long, options: options).truncatedTokens.negative.count > 0)
  }

  @Test func perpNegGenerationRuns() throws {
    let pipeline = try tinyPipeline.get()
    var perp = request()
    perp.guidance.rule = .perpNeg
    let result = try pipeline.generate(perp, options: options)
    let plain = try pipeline.generate(request(), options: options)
    #expect(result.image != plain.image)
    #expect(result.latents.scalars.allSatisfy { $0.isFinite })
  }

  @Test func badNegativeWeightsAreNamed() throws {
    let pipeline = try tinyPipeline.get()
    var bad = request()
    bad.negativePrompts = [NegativePrompt("blur", weight: -1)]
    #expect(throws: PipelineError.self) { _ = try pipeline.generate(bad, options: options) }
    bad = request()
    bad.guidance.negativeSteps = 0...2
    #expect(throws: PipelineError.self) { _ = try pipeline.generate(bad, options: options) }
  }
}

// Normalized Attention Guidance against our diffusers reference (weights/make_nag_fixtures.py):
// NAG at guidance scale 1 on LCM and SD-Turbo-style sampling, with CFG, in a step window, with
// two weighted negatives, and φ = 1 (off).

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let nagReference = Result { try fixture("nag-sd15.safetensors") }

private let nagCases: [String] = {
  guard let reference = try? nagReference.get(),
    let cases = try? JSONValue.parse(Array((reference.metadata["cases"] ?? "").utf8)).objectValue
  else { return [] }
  return cases.keys.sorted()
}()

@Suite("NAG matches the diffusers reference (nag-sd15.safetensors)")
struct NAGTests {
  func request(_ settings: JSONValue) throws -> GenerationRequest {
    var request = GenerationRequest(
      prompt: "a red apple", steps: try #require(settings["steps"]?.intValue), seed: 7,
      sampler: SchedulerKind(className: try #require(settings["scheduler"]?.stringValue)),
      width: 64, height: 64)
    if let spacing = settings["overrides"]?["timestep_spacing"]?.stringValue {
      request.timestepSpacing = TimestepSpacing(rawValue: spacing)
    }
    request.negativePrompts = try #require(settings["negatives"]?.arrayValue).map { pair in
      NegativePrompt(
        pair.arrayValue?[0].stringValue ?? "", weight: Float(pair.arrayValue?[1].doubleValue ?? 1))
    }
    request.guidance.scale = Float(try #require(settings["guidance_scale"]?.doubleValue))
    request.guidance.rule = .nag
    request.guidance.nag = NormalizedAttentionGuidance(
      scale: Float(try #require(settings["nag_scale"]?.doubleValue)),
      tau: Float(try #require(settings["nag_tau"]?.doubleValue)),
      alpha: Float(try #require(settings["nag_alpha"]?.doubleValue)))
    if let window = settings["nag_steps"]?.arrayValue?.compactMap(\.intValue), window.count == 2 {
      request.guidance.nag.steps = window[0]...window[1]
    }
    return request
  }

  @Test(arguments: nagCases)
  func guidedGenerationMatches(name: String) throws {
    let reference = try nagReference.get()
    let cases = try #require(
      try JSONValue.parse(Array((reference.metadata["cases"] ?? "").utf8)).objectValue)
    let settings = try #require(cases[name])
    let pipeline = try (settings["model"]?.stringValue == "sd2" ? tinySD2Pipeline : tinyPipeline)
      .get()
    let outcome = try expectMatchesReference(
      pipeline, try request(settings), reference: reference, name: name)
    print("nag \(name): max |Δ|/scale \(outcome.worst)")
  }

  /// At scale 1 NAG still removes what the negative names (the image differs from the plain
  /// run), and with φ = 1 it is the plain run exactly.
  @Test func negativeActsAtScaleOne() throws {
    let pipeline = try tinyPipeline.get()
    var request = GenerationRequest(
      prompt: "a red apple", negativePrompt: "blurry", steps: 2, seed: 3, sampler: .lcm,
      width: 64, height: 64)
    request.guidance.scale = 1
    let plain = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    request.guidance.rule = .nag
    let guided = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    #expect(guided.latents != plain.latents)
    request.guidance.nag.scale = 1
    #expect(
      try pipeline.generate(request, options: ComputeOptions(threadCount: 2)).latents
        == plain.latents)
    request.guidance.nag.tau = 0.5
    #expect(throws: PipelineError.self) {
      _ = try pipeline.generate(request, options: ComputeOptions(threadCount: 2))
    }
  }
}

@Suite(.serialized) struct NAGCommandLineTests {
  /// `sd --guidance nag` at scale 1 writes the library's NAG image, records the settings, and
  /// `--compare` puts the run without the negative beside it.
  @Test func cliRunsNAG() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("nag.png")
    let options = [
      "--sampler", "lcm", "--guidance-scale", "1", "--guidance", "nag", "--negative-prompt",
      "blurry", "--nag-scale", "4", "--nag-steps", "1-2",
    ]
    let result = try runSD(quick(output, options))
    #expect(result.status == 0, "\(result.error)")
    var request = GenerationRequest(
      prompt: "a red apple", negativePrompt: nil, steps: 2, sampler: .lcm, width: 64, height: 64)
    request.negativePrompts = [NegativePrompt("blurry")]
    request.guidance = Guidance(
      scale: 1, rule: .nag, nag: NormalizedAttentionGuidance(scale: 4, steps: 1...2))
    let expected = try tinyPipeline.get().generate(request, options: ComputeOptions(threadCount: 1))
    #expect(try RGBImage(contentsOf: output) == expected.image)
    let parameters = try #require(try PNGText.read(contentsOf: output)["parameters"])
    #expect(
      parameters.contains(
        "Sampler: LCM, CFG scale: 1.0, Seed: 0, Size: 64x64, Model: tiny-sd15, Guidance: nag, NAG scale: 4.0, NAG tau: 2.5, NAG alpha: 0.25"
      ), "\(parameters)")
    let compare = folder.appendingPathComponent("compare.png")
    #expect(try runSD(quick(compare, options + ["--compare"])).status == 0)
    #expect(try RGBImage(contentsOf: compare).width == 128)
  }
}

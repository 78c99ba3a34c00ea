// LCM, TCD and trailing timestep spacing against diffusers' StableDiffusionPipeline on the tiny
// models (weights/make_fewstep_fixtures.py): timesteps, latents after every step, the image.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let fewStepReference = Result { try fixture("fewstep-sd15.safetensors") }

private let fewStepCases: [String] = {
  guard let reference = try? fewStepReference.get(),
    let cases = try? JSONValue.parse(Array((reference.metadata["cases"] ?? "").utf8)).objectValue
  else { return [] }
  return cases.keys.sorted()
}()

@Suite("Few-step samplers match diffusers (fewstep-sd15.safetensors)")
struct FewStepSamplerTests {
  @Test(arguments: fewStepCases)
  func samplerMatches(name: String) throws {
    let reference = try fewStepReference.get()
    let cases = try #require(
      try JSONValue.parse(Array((reference.metadata["cases"] ?? "").utf8)).objectValue)
    let settings = try #require(cases[name])
    var pipeline = try (settings["model"]?.stringValue == "sd2" ? tinySD2Pipeline : tinyPipeline)
      .get()
    var request = GenerationRequest(
      prompt: "a red apple", negativePrompt: settings["negative_prompt"]?.stringValue,
      steps: try #require(settings["steps"]?.intValue), seed: 7,
      sampler: SchedulerKind(className: try #require(settings["scheduler"]?.stringValue)),
      width: 64, height: 64)
    request.guidance.scale = Float(try #require(settings["guidance_scale"]?.doubleValue))
    request.eta = Float(settings["eta"]?.doubleValue ?? 0)
    let overrides = settings["overrides"]
    if let spacing = overrides?["timestep_spacing"]?.stringValue {
      request.timestepSpacing = TimestepSpacing(rawValue: spacing)
    }
    if let steps = overrides?["original_inference_steps"]?.intValue {
      pipeline.schedulerConfiguration.originalInferenceSteps = steps
    }
    if let scaling = overrides?["timestep_scaling"]?.doubleValue {
      pipeline.schedulerConfiguration.timestepScaling = scaling
    }
    var configuration = pipeline.schedulerConfiguration
    configuration.timestepSpacing = request.timestepSpacing ?? configuration.timestepSpacing
    let scheduler = try makeScheduler(
      try #require(request.sampler), configuration: configuration, steps: request.steps,
      eta: Double(request.eta))
    let expected = try #require(settings["timesteps"]?.arrayValue).compactMap(\.doubleValue)
    #expect(scheduler.timesteps.map(Double.init) == expected, "\(name) timesteps")
    let outcome = try expectMatchesReference(pipeline, request, reference: reference, name: name)
    print("few-step \(name): max |Δ|/scale \(outcome.worst)")
  }

  @Test func badSettingsAreNamed() throws {
    let pipeline = try tinyPipeline.get()
    var request = GenerationRequest(prompt: "x", steps: 60, sampler: .lcm, width: 64, height: 64)
    #expect {
      _ = try pipeline.generate(request, options: ComputeOptions(threadCount: 1))
    } throws: { "\($0)".contains("original_inference_steps = 50") }
    request.steps = 4
    request.sampler = .tcd
    request.eta = 1.5
    #expect {
      _ = try pipeline.generate(request, options: ComputeOptions(threadCount: 1))
    } throws: { "\($0)".contains("gamma must be in [0, 1]") }
  }
}

@Suite(.serialized) struct FewStepCommandLineTests {
  /// `--sampler tcd --eta 0.3` and `--sampler euler-a --timestep-spacing trailing` write the
  /// library's images for the same settings.
  @Test func optionsReachTheSampler() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    for (extra, sampler, eta, spacing) in [
      (["--sampler", "tcd", "--eta", "0.3"], SchedulerKind.tcd, Float(0.3), TimestepSpacing?.none),
      (["--sampler", "euler-a", "--timestep-spacing", "trailing"], .eulerAncestral, 0, .trailing),
    ] {
      let output = folder.appendingPathComponent("\(sampler.rawValue).png")
      let result = try runSD(quick(output, extra + ["--guidance-scale", "1"]))
      #expect(result.status == 0, "\(result.error)")
      var request = GenerationRequest(
        prompt: "a red apple", steps: 2, guidance: Guidance(scale: 1), sampler: sampler,
        width: 64, height: 64)
      request.eta = eta
      request.timestepSpacing = spacing
      let expected = try tinyPipeline.get().generate(
        request, options: ComputeOptions(threadCount: 1))
      #expect(try RGBImage(contentsOf: output) == expected.image, "\(sampler)")
    }
  }
}

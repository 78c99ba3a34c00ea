// An SDXL single-file checkpoint (weights/make_sdxl_single_file_fixture.py: the tiny SDXL in
// the `sd_xl_base_1.0.safetensors` layout, checked there against diffusers' own conversion)
// gives the same pipeline as the diffusers folder, bit for bit; without a configuration folder
// it is recognised as SDXL and read with SDXL base's presets.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct SDXLSingleFileTests {
  let folder = fixturesDirectory.appendingPathComponent("tiny-sdxl")
  let singleFile = fixturesDirectory.appendingPathComponent("tiny-sdxl-single-file.safetensors")

  private func requests() -> [GenerationRequest] {
    let plain = GenerationRequest(
      prompt: "a red apple on a wooden table", steps: 3, guidance: Guidance(scale: 5), seed: 42,
      sampler: .euler, width: 64, height: 64)
    var negative = plain
    (negative.negativePrompt, negative.sampler, negative.seed) = ("green tones", .eulerAncestral, 7)
    negative.sizeConditioning = SizeConditioning(
      originalSize: (width: 96, height: 128), cropTopLeft: (left: 4, top: 8),
      targetSize: (width: 64, height: 64))
    // `plain` has no negative prompt: its unconditional row is force_zeros_for_empty_prompt's.
    return [plain, negative]
  }

  @Test(arguments: [false, true])
  func singleFileGivesTheFolderModelsOutput(halfPrecisionWeights: Bool) throws {
    let fromFolder = try StableDiffusionPipeline(
      modelAt: folder, halfPrecisionWeights: halfPrecisionWeights)
    let fromFile = try StableDiffusionPipeline(
      modelAt: singleFile, configurationsFrom: folder, halfPrecisionWeights: halfPrecisionWeights)
    #expect(fromFolder.unusedWeights.isEmpty)
    #expect(fromFile.unusedWeights.isEmpty, "\(fromFile.unusedWeights)")
    #expect(fromFile.textEncoder2 != nil && fromFile.tokenizer2 != nil)
    #expect(fromFile.forcesZerosForEmptyPrompt)
    #expect(fromFile.defaultSampler == .euler)
    #expect(fromFile.schedulerConfiguration == fromFolder.schedulerConfiguration)
    let options = ComputeOptions(threadCount: 2)
    for request in requests() {
      let a = try fromFolder.generate(request, options: options)
      let b = try fromFile.generate(request, options: options)
      #expect(a.latents == b.latents)
      #expect(a.image == b.image)
    }
  }

  /// Without `configurationsFrom` the file's OpenCLIP keys select SDXL base's presets, which
  /// the tiny model does not fit: the first read names a key of SDXL's first text encoder.
  @Test func singleFileWithoutConfigUsesSDXLShapesAndNamesTheMismatch() {
    #expect {
      _ = try StableDiffusionPipeline(modelAt: singleFile)
    } throws: { error in
      guard
        case .model(.weights(.shapeMismatch(let key, let expected, _, let file))) =
          error as? PipelineError
      else { return false }
      return key.hasPrefix("conditioner.embedders.0.transformer.") && expected.last == 768
        && file.hasSuffix("tiny-sdxl-single-file.safetensors")
    }
  }

  /// The scheduler an SDXL file gets without a configuration folder: SDXL base's.
  @Test func bundledSDXLSchedulerIsEulerLeading() throws {
    let url = try writeSyntheticSDXLSingleFile()
    defer { try? FileManager.default.removeItem(at: url) }
    let opened = try ModelFolder(at: url)
    let file = try #require(opened.schedulerConfigurationFile)
    let configuration = try SchedulerConfiguration(contentsOf: file)
    #expect(configuration.kind == .euler)
    #expect(configuration.betaSchedule == "scaled_linear")
    #expect(configuration.betaStart == 0.00085 && configuration.betaEnd == 0.012)
    #expect(configuration.timestepSpacing == .leading)
    #expect(configuration.stepsOffset == 1)
    #expect(configuration.predictionType == .epsilon)
  }
}

// Loading a model from a diffusers folder and from an SD 1.x single-file checkpoint
// (weights/make_single_file_fixture.py, checked there against diffusers' own loader) gives the
// same pipeline; wrong or foreign files fail with a message naming them.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct ModelLoadingTests {
  let folder = fixturesDirectory.appendingPathComponent("tiny-sd15")
  let singleFile = fixturesDirectory.appendingPathComponent("tiny-sd15-single-file.safetensors")

  @Test func singleFileGivesTheFolderModelsOutput() throws {
    let fromFolder = try StableDiffusionPipeline(modelAt: folder)
    let fromFile = try StableDiffusionPipeline(modelAt: singleFile, configurationsFrom: folder)
    #expect(fromFolder.unusedWeights.isEmpty)
    #expect(fromFile.unusedWeights.isEmpty)
    let options = ComputeOptions(threadCount: 2)
    for sampler in [SchedulerKind.pndm, .eulerAncestral] {
      var request = GenerationRequest(
        prompt: "a red apple", negativePrompt: "green tones", steps: 3, seed: 3, sampler: sampler)
      request.width = 64
      request.height = 64
      let a = try fromFolder.generate(request, options: options)
      let b = try fromFile.generate(request, options: options)
      #expect(a.latents == b.latents)
      #expect(a.image == b.image)
    }
    // img2img also runs the VAE encoder.
    let start = RGBImage(
      width: 64, height: 64, pixels: (0..<(64 * 64 * 3)).map { UInt8(($0 * 7) % 256) })
    let request = GenerationRequest(
      prompt: "a red apple", steps: 3, seed: 5, width: 64, height: 64, initImage: start,
      strength: 0.6)
    #expect(
      try fromFolder.generate(request, options: options).image
        == fromFile.generate(request, options: options).image)
  }

  /// An SD 1.x UNet takes no pooled embedding, so a `text_projection` on the one text encoder
  /// (a CLIPTextModelWithProjection, or a synthetic store, which has every key) changes nothing.
  @Test func projectionOnTheOnlyTextEncoderIsIgnored() throws {
    let plain = try StableDiffusionPipeline(modelAt: folder)
    let width = plain.textEncoder.configuration.hiddenSize
    let extra = FileManager.default.temporaryDirectory.appendingPathComponent(
      "projection-\(UUID().uuidString).safetensors")
    defer { try? FileManager.default.removeItem(at: extra) }
    try SafeTensorsWriter.write(
      ["text_projection.weight": Tensor(repeating: 0.01, shape: [width, width])], to: extra.path)
    let store = try WeightStore(paths: [
      folder.appendingPathComponent("text_encoder/model.safetensors").path, extra.path,
    ])
    let projected = try CLIPTextModel(
      configuration: plain.textEncoder.configuration, weights: store)
    #expect(projected.textProjection != nil)
    let pipeline = try StableDiffusionPipeline(
      tokenizer: plain.tokenizer, textEncoder: projected, unet: plain.unet, vae: plain.vae,
      schedulerConfiguration: plain.schedulerConfiguration, defaultSampler: plain.defaultSampler)
    let request = GenerationRequest(
      prompt: "a red apple", negativePrompt: "green tones", steps: 2, seed: 3, width: 64,
      height: 64)
    let options = ComputeOptions(threadCount: 2)
    #expect(
      try pipeline.generate(request, options: options).image
        == plain.generate(request, options: options).image)
  }

  @Test func singleFileWithoutConfigUsesSD15ShapesAndNamesTheMismatch() {
    #expect {
      _ = try StableDiffusionPipeline(modelAt: singleFile)
    } throws: { error in
      guard case .model(.weights(.shapeMismatch(let key, _, _, let file))) = error as? PipelineError
      else { return false }
      return key.hasPrefix("cond_stage_model.transformer.")
        && file.hasSuffix("tiny-sd15-single-file.safetensors")
    }
  }

  @Test func foreignSafetensorsIsNotACheckpoint() throws {
    #expect {
      _ = try StableDiffusionPipeline(
        modelAt: fixturesDirectory.appendingPathComponent("ops.safetensors"))
    } throws: { error in
      guard case .model(.invalidConfiguration(_, let reason)) = error as? PipelineError else {
        return false
      }
      return reason.contains("not a single-file Stable Diffusion checkpoint")
    }
  }

  @Test func folderWithoutWeightsNamesWhatIsMissing() throws {
    let empty = FileManager.default.temporaryDirectory.appendingPathComponent(
      "empty-model-\(UUID().uuidString)")
    for part in ["text_encoder", "unet", "vae"] {
      let source = folder.appendingPathComponent("\(part)/config.json")
      try FileManager.default.createDirectory(
        at: empty.appendingPathComponent(part), withIntermediateDirectories: true)
      try FileManager.default.copyItem(
        at: source, to: empty.appendingPathComponent("\(part)/config.json"))
    }
    try Data([0x80]).write(to: empty.appendingPathComponent("text_encoder/pytorch_model.bin"))
    defer { try? FileManager.default.removeItem(at: empty) }
    #expect {
      _ = try StableDiffusionPipeline(modelAt: empty)
    } throws: { error in
      guard case .model(.weights(.unreadableFile(let path, _))) = error as? PipelineError else {
        return false
      }
      return path.hasSuffix("text_encoder")
    }
  }
}

/// Weights kept in half precision: the F16 text encoder gives identical embeddings, and the
/// rounded fp32 UNet and VAE give latents close to the fp32 run.
@Suite struct HalfPrecisionPipelineTests {
  @Test func halfPrecisionWeightsStayClose() throws {
    let folder = fixturesDirectory.appendingPathComponent("tiny-sd15")
    let full = try StableDiffusionPipeline(modelAt: folder)
    let half = try StableDiffusionPipeline(modelAt: folder, halfPrecisionWeights: true)
    let options = ComputeOptions(threadCount: 2)
    #expect(
      half.encode(prompt: "a red apple", options: options).0
        == full.encode(prompt: "a red apple", options: options).0)
    let request = GenerationRequest(
      prompt: "a red apple", negativePrompt: "green tones", steps: 3, seed: 1, width: 64, height: 64
    )
    let a = try full.generate(request, options: options)
    let b = try half.generate(request, options: options)
    let difference = compare(b.latents, a.latents, name: "fp16 vs fp32 latents")
    // fp16 rounding of the weights (relative 2⁻¹¹) through 3 steps of a random-weight network.
    #expect(difference.isWithin(2e-2), "\(difference)")
    #expect(difference.maxAbsolute > 0)
    // The F16 text encoder is used in place in its file and its pages were dropped after the
    // first generation; a second one reads them back and gives the same bits.
    #expect(try half.generate(request, options: options).latents == b.latents)
  }
}

/// A folder with both the full file and diffusers' `.fp16` variant: half-precision loading
/// opens the variant (used in place), full-precision loading the full file.
@Suite struct VariantChoiceTests {
  @Test func halfPrecisionOpensTheFP16Variant() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "variants-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    try FileManager.default.copyItem(
      atPath: fixturePath("tiny-sd15/text_encoder/model.safetensors"),
      toPath: folder.appendingPathComponent("model.fp16.safetensors").path)
    try SafeTensorsWriter.write(
      ["w": Tensor(shape: [2], scalars: [1, 2])],
      to: folder.appendingPathComponent("model.safetensors").path)
    let half = try WeightStore.open(directory: folder, stem: "model", keepsHalfPrecision: true)
    #expect(half.origin.hasSuffix("model.fp16.safetensors"))
    let full = try WeightStore.open(directory: folder, stem: "model")
    #expect(full.origin.hasSuffix("/model.safetensors"))
  }
}

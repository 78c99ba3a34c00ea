// Inpainting against diffusers' StableDiffusionInpaintPipeline (weights/make_inpaint_fixtures.py)
// on the tiny ordinary model (the kept region blended back every step) and on its 9-channel
// inpainting variant; the mask rules; and `sd --mask`.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let inpaintReference = Result { try fixture("inpaint-sd15.safetensors") }
private let tinyInpaintPipeline = Result {
  try StableDiffusionPipeline(
    modelAt: fixturesDirectory.appendingPathComponent("tiny-sd15-inpaint"))
}
private let imagePath = fixturePath("inpaint/image.png")
private let maskPath = fixturePath("inpaint/mask.png")

@Suite struct InpaintingTests {
  /// (case, inpainting model?, sampler, negative prompt, strength), as CASES in the script.
  static let cases: [(String, Bool, SchedulerKind, String?, Float)] = [
    ("plain_pndm", false, .pndm, "green tones", 1),
    ("plain_euler_a_strength", false, .eulerAncestral, "green tones", 0.75),
    ("inpaint_pndm", true, .pndm, "green tones", 1),
    ("inpaint_euler_a", true, .eulerAncestral, "green tones", 1),
    ("inpaint_ddim_strength", true, .ddim, nil, 0.6),
  ]

  func request(
    sampler: SchedulerKind, negative: String?, strength: Float
  ) throws -> GenerationRequest {
    let image = try RGBImage(contentsOf: URL(fileURLWithPath: imagePath))
    return GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: negative, steps: 4, seed: 42,
      sampler: sampler, initImage: image, strength: strength,
      mask: InpaintingMask(try RGBImage(contentsOf: URL(fileURLWithPath: maskPath))))
  }

  @Test("latents after every step and the image match diffusers", arguments: cases)
  func matchesDiffusers(
    _ testCase: (
      name: String, inpaintingModel: Bool, sampler: SchedulerKind, negative: String?,
      strength: Float
    )
  ) throws {
    let pipeline = try (testCase.inpaintingModel ? tinyInpaintPipeline : tinyPipeline).get()
    let outcome = try expectMatchesReference(
      pipeline,
      try request(
        sampler: testCase.sampler, negative: testCase.negative, strength: testCase.strength),
      reference: try inpaintReference.get(), name: testCase.name)
    print("inpaint \(testCase.name): max |Δ|/scale \(outcome.worst)")
  }

  /// The mask reads as diffusers reads it (PIL's luminance, binarized at 0.5: grey 127 keeps,
  /// 128 repaints), is downsampled by nearest neighbour, and with --keep-unmasked the pixels
  /// outside it are the init image's exactly.
  @Test func maskRulesAndKeptPixels() throws {
    let mask = InpaintingMask(try RGBImage(contentsOf: URL(fileURLWithPath: maskPath)))
    #expect(mask.values[0] == Float(127) / 255 && mask.values[63] == Float(128) / 255)
    let colour = InpaintingMask(RGBImage(width: 1, height: 1, pixels: [255, 0, 0]))
    #expect(colour.values == [Float(76) / 255])  // PIL: L of pure red is 76
    var request = try request(sampler: .pndm, negative: "green tones", strength: 1)
    request.keepsUnmaskedPixels = true
    let result = try tinyPipeline.get().generate(request, options: ComputeOptions(threadCount: 2))
    let original = try RGBImage(contentsOf: URL(fileURLWithPath: imagePath))
    for index in 0..<(64 * 64) where mask.values[index] == 0 {
      #expect(
        result.image.pixels[(3 * index)..<(3 * index + 3)]
          == original.pixels[(3 * index)..<(3 * index + 3)])
    }
    #expect(result.image != original)
    let blurred = mask.blurred(radius: 2)
    #expect(blurred.values[30 * 64 + 36] == 1 && blurred.values[30 * 64 + 19] > 0)
    #expect(blurred.values[30 * 64 + 19] < 0.5 && blurred.values[60 * 64 + 30] == 0)
  }

  /// Every bad combination is named: a mask without an init image or of another size, an
  /// inpainting model without a mask.
  @Test func badMasksAreNamed() throws {
    var request = try request(sampler: .pndm, negative: nil, strength: 1)
    let options = ComputeOptions(threadCount: 2)
    var small = request
    small.mask = InpaintingMask(width: 32, height: 32, values: Array(repeating: 1, count: 1024))
    #expect(
      throws: PipelineError.invalidArgument(
        name: "mask", reason: "is 32x32, the init image is 64x64")
    ) {
      _ = try tinyPipeline.get().generate(small, options: options)
    }
    var noImage = request
    noImage.initImage = nil
    (noImage.width, noImage.height) = (64, 64)
    #expect(
      throws: PipelineError.invalidArgument(name: "mask", reason: "needs an init image to repaint")
    ) {
      _ = try tinyPipeline.get().generate(noImage, options: options)
    }
    request.mask = nil
    #expect {
      _ = try tinyInpaintPipeline.get().generate(request, options: options)
    } throws: { error in
      guard case .invalidArgument("mask", let reason) = error as? PipelineError else {
        return false
      }
      return reason.contains("inpainting model")
    }
  }

  /// A single-file inpainting checkpoint (the tiny single file with the inpainting UNet's
  /// 9-channel conv_in, as sd-v1-5-inpainting differs from v1-5 in shape) is read as an inpainting model
  /// and gives the folder model's image.
  @Test func singleFileInpaintingCheckpoint() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let base = try fixture("tiny-sd15-single-file.safetensors")
    var tensors: [String: Tensor] = [:]
    for name in base.names { tensors[name] = try base.tensor(name) }
    let unet = try SafeTensorsFile(
      path: fixturePath("tiny-sd15-inpaint/unet/diffusion_pytorch_model.safetensors"))
    for part in ["weight", "bias"] {
      tensors["model.diffusion_model.input_blocks.0.0.\(part)"] = try unet.tensor("conv_in.\(part)")
    }
    let path = folder.appendingPathComponent("tiny-inpainting.safetensors").path
    try SafeTensorsWriter.write(tensors, to: path)
    let pipeline = try StableDiffusionPipeline(
      modelAt: URL(fileURLWithPath: path),
      configurationsFrom: fixturesDirectory.appendingPathComponent("tiny-sd15"))
    let request = try request(sampler: .pndm, negative: "green tones", strength: 1)
    let options = ComputeOptions(threadCount: 2)
    #expect(
      try pipeline.generate(request, options: options).image
        == tinyInpaintPipeline.get().generate(request, options: options).image)
  }

  /// `sd --init-image --mask` repaints (strength 1 by default) as the library does; a mask of
  /// another size names both sizes.
  @Test func commandLineInpaints() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let result = try runSD([
      "--model", fixturePath("tiny-sd15-inpaint"), "--prompt", "a red apple on a wooden table",
      "--negative-prompt", "green tones", "--steps", "4", "--seed", "42", "--sampler", "pndm",
      "--init-image", imagePath, "--mask", maskPath, "--output", output.path, "--quiet",
    ])
    #expect(result.status == 0, "\(result.error)")
    let expected = try tinyInpaintPipeline.get().generate(
      try request(sampler: .pndm, negative: "green tones", strength: 1),
      options: ComputeOptions(threadCount: 1))
    #expect(try RGBImage(contentsOf: output) == expected.image)

    let small = folder.appendingPathComponent("small.png")
    try RGBImage(width: 32, height: 32, red: 255, green: 255, blue: 255).writePNG(to: small)
    let refused = try runSD([
      "--model", tinyModel, "--prompt", "x", "--init-image", imagePath, "--mask", small.path,
      "--output", folder.appendingPathComponent("x.png").path,
    ])
    #expect(refused.status == 2, "\(refused.error)")
    #expect(refused.error.contains("--mask: is 32x32, the init image is 64x64"), "\(refused.error)")
    let noImage = try runSD([
      "--model", tinyModel, "--prompt", "x", "--mask", maskPath,
      "--output", folder.appendingPathComponent("y.png").path,
    ])
    #expect(noImage.status == 2 && noImage.error.contains("--mask"), "\(noImage.error)")
  }
}

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
    var black = request
    black.mask = InpaintingMask(width: 64, height: 64, values: Array(repeating: 0, count: 4096))
    black.onlyMaskedPadding = 32
    #expect(
      throws: PipelineError.invalidArgument(
        name: "mask", reason: "is black everywhere: nothing to repaint")
    ) {
      _ = try tinyPipeline.get().generate(black, options: options)
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

  /// Pillow's Lanczos resize, bit for bit, on an RGB image, a grayscale mask (as R = G = B) and
  /// the zero-height box `_resize_and_fill` fills borders from.
  @Test func resamplingIsPillows() throws {
    let reference = try inpaintReference.get()
    let image = try RGBImage(
      contentsOf: URL(fileURLWithPath: fixturePath("inpaint/large-image.png")))
    let mask = try RGBImage(contentsOf: URL(fileURLWithPath: fixturePath("inpaint/large-mask.png")))
    for (w, h) in [(64, 64), (50, 37), (200, 150), (64, 48)] {
      let expected = try reference.tensor("resize.\(w)x\(h)").scalars.map { UInt8($0) }
      #expect(image.resized(width: w, height: h).pixels == expected, "\(w)x\(h)")
      let edge = try reference.tensor("resize.edge.\(w)x\(h)").scalars.map { UInt8($0) }
      #expect(
        image.resized(width: w, height: h, box: (0, 0, 128, 0)).pixels == edge, "edge \(w)x\(h)")
      let maskLevels = try reference.tensor("resize.mask.\(w)x\(h)").scalars.map { UInt8($0) }
      let resizedMask = mask.resized(width: w, height: h).pixels
      #expect(stride(from: 0, to: resizedMask.count, by: 3).map { resizedMask[$0] } == maskLevels)
    }
  }

  /// The "only masked" mode against diffusers' `padding_mask_crop`: the crop's latents after
  /// every step, and the final picture (the crop pasted back through the mask, a grey patch of
  /// it included) equal to diffusers' PIL image.
  @Test(arguments: [
    ("only_masked_plain", false, SchedulerKind.pndm, 8),
    ("only_masked_inpaint", true, .eulerAncestral, 4),
  ])
  func onlyMaskedMatchesDiffusers(
    name: String, inpaintingModel: Bool, sampler: SchedulerKind, padding: Int
  ) throws {
    let reference = try inpaintReference.get()
    let image = try RGBImage(
      contentsOf: URL(fileURLWithPath: fixturePath("inpaint/large-image.png")))
    let mask = InpaintingMask(
      try RGBImage(contentsOf: URL(fileURLWithPath: fixturePath("inpaint/large-mask.png"))))
    var request = GenerationRequest(
      prompt: "a red apple on a wooden table", negativePrompt: "green tones", steps: 4, seed: 42,
      sampler: sampler, initImage: image, strength: 1, mask: mask)
    request.onlyMaskedPadding = padding
    let pipeline = try (inpaintingModel ? tinyInpaintPipeline : tinyPipeline).get()
    var steps: [Tensor] = []
    let result = try pipeline.generate(request, options: ComputeOptions(threadCount: 2)) {
      steps.append($0.latents)
      return true
    }
    for (index, latents) in steps.enumerated() {
      let difference = compare(latents, try reference.tensor("\(name).latents.\(index)"))
      #expect(difference.isWithin(referenceTolerance), "\(difference)")
    }
    let final = try reference.tensor("\(name).final").scalars.map { UInt8($0) }
    // Our decode differs from diffusers' by ~1e-5, which turns the odd 8-bit rounding the other
    // way; Lanczos spreads such a level to a few neighbours. Everything else is exact.
    let differences = zip(result.image.pixels, final).map { abs(Int($0) - Int($1)) }
    #expect(result.image.width == 128 && result.image.height == 96)
    #expect(differences.max() ?? 0 <= 1, "largest difference \(differences.max() ?? 0) levels")
    #expect(
      differences.filter { $0 != 0 }.count * 1000 < final.count,
      "\(differences.filter { $0 != 0 }.count) of \(final.count) samples differ")
    // Outside the crop the picture is the original, bit for bit.
    for y in [0, 10, 95] {
      for x in [0, 30, 127] {
        let offset = (y * 128 + x) * 3
        #expect(result.image.pixels[offset..<(offset + 3)] == image.pixels[offset..<(offset + 3)])
      }
    }
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

    // --only-masked: the crop at the model's size, pasted back into the 128x96 picture.
    let large = fixturePath("inpaint/large-image.png")
    let onlyMasked = folder.appendingPathComponent("only-masked.png")
    let cropped = try runSD([
      "--model", fixturePath("tiny-sd15-inpaint"), "--prompt", "a red apple on a wooden table",
      "--steps", "4", "--seed", "42", "--init-image", large, "--mask",
      fixturePath("inpaint/large-mask.png"), "--only-masked", "4", "--output", onlyMasked.path,
      "--quiet",
    ])
    #expect(cropped.status == 0, "\(cropped.error)")
    var onlyMaskedRequest = GenerationRequest(
      prompt: "a red apple on a wooden table", steps: 4, seed: 42,
      initImage: try RGBImage(contentsOf: URL(fileURLWithPath: large)), strength: 1,
      mask: InpaintingMask(
        try RGBImage(contentsOf: URL(fileURLWithPath: fixturePath("inpaint/large-mask.png")))))
    onlyMaskedRequest.onlyMaskedPadding = 4
    #expect(
      try RGBImage(contentsOf: onlyMasked)
        == tinyInpaintPipeline.get().generate(
          onlyMaskedRequest, options: ComputeOptions(threadCount: 1)
        ).image)

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

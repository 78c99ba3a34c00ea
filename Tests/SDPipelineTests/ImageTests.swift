// PNG input and output: pixels, text chunks, errors.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct ImageTests {
  private func temporaryURL(_ name: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent(
      "sd-tests-\(UUID().uuidString)-\(name)")
  }

  @Test func pngRoundTripKeepsPixelsAndText() throws {
    let pixels = (0..<(5 * 3 * 3)).map { UInt8(($0 * 37) % 256) }
    let image = RGBImage(width: 5, height: 3, pixels: pixels)
    let url = temporaryURL("roundtrip.png")
    defer { try? FileManager.default.removeItem(at: url) }
    try image.writePNG(to: url, text: [("parameters", "a red apple\nSteps: 4")])
    #expect(try RGBImage(contentsOf: url) == image)
    let bytes = [UInt8](try Data(contentsOf: url))
    #expect(PNGText.read(bytes)["parameters"] == "a red apple\nSteps: 4")
    // The text comes before the image data, so readers that stop at IDAT find it.
    let textAt = try #require(
      bytes.indices.dropLast(4).first { Array(bytes[$0..<$0 + 4]) == Array("tEXt".utf8) })
    let dataAt = try #require(
      bytes.indices.dropLast(4).first { Array(bytes[$0..<$0 + 4]) == Array("IDAT".utf8) })
    #expect(textAt < dataAt)
    // Text outside Latin-1 goes into an iTXt chunk as UTF-8.
    try image.writePNG(to: url, text: [("parameters", "ein Äpfel, 林檎")])
    #expect(try PNGText.read(contentsOf: url)["parameters"] == "ein Äpfel, 林檎")
  }

  /// The PNG parameters as the web UIs write them: their sampler names, "Size", "Clip skip"
  /// counted their way, the model without its file extension, values with commas quoted.
  @Test func parametersFollowTheWebUIFormat() {
    var request = GenerationRequest(
      prompt: "a red apple <lora:detail:0.5>", negativePrompt: "blurry, lowres", steps: 20,
      seed: 42, clipSkip: 1)
    request.initImage = RGBImage(width: 8, height: 8, red: 0, green: 0, blue: 0)
    request.strength = 0.6
    #expect(
      request.parametersText(
        sampler: .dpmSolverMultistepKarras, width: 512, height: 768,
        modelName: "v1-5-pruned-emaonly.safetensors")
          == """
          a red apple <lora:detail:0.5>
          Negative prompt: blurry, lowres
          Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, \
          Model: v1-5-pruned-emaonly, Denoising strength: 0.6, Clip skip: 2
          """)
    request.negativePrompts = [NegativePrompt("hands", weight: 0.5)]
    #expect(
      request.parametersText(sampler: .eulerAncestral, width: 64, height: 64, modelName: "m")
        .hasSuffix(
          #"Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: m, Denoising strength: 0.6, Clip skip: 2, Negative prompts: "blurry, lowres | hands:0.5""#
        ))
  }

  @Test func tensorConversionRoundTrips() {
    let image = RGBImage(width: 4, height: 2, pixels: (0..<24).map { UInt8($0 * 10) })
    let tensor = image.tensor
    #expect(tensor.shape == [1, 3, 2, 4])
    #expect(RGBImage(decoded: tensor) == image)
  }

  @Test func unreadableImagesNameTheFile() throws {
    let url = temporaryURL("not-a.png")
    defer { try? FileManager.default.removeItem(at: url) }
    try Data("definitely not a png".utf8).write(to: url)
    #expect {
      _ = try RGBImage(contentsOf: url)
    } throws: { error in
      guard case .unreadableImage(let path, _) = error as? PipelineError else { return false }
      return path == url.path
    }
    #expect(throws: PipelineError.self) {
      _ = try RGBImage(contentsOf: url.appendingPathExtension("missing"))
    }
  }

  @Test func failedWriteLeavesNothingBehind() {
    let directory = temporaryURL("no-such-directory")
    let url = directory.appendingPathComponent("out.png")
    #expect(throws: PipelineError.self) {
      try RGBImage(width: 1, height: 1, red: 0, green: 0, blue: 0).writePNG(to: url)
    }
    #expect(!FileManager.default.fileExists(atPath: directory.path))
  }
}

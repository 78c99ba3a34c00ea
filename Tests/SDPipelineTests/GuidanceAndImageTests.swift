// Classifier-free guidance arithmetic and PNG input/output.

import Foundation
import SDTensor
import SDTestSupport
import Testing

import SDPipeline

@Suite struct GuidanceTests {
  @Test func combinesNegativeAndPositiveRows() throws {
    let guidance = try ClassifierFreeGuidance(scale: 7.5)
    let negative = seededTensor([2, 3, 4], seed: 1)
    let positive = seededTensor([2, 3, 4], seed: 2)
    let guided = guidance.guidedPrediction(concatenate([negative, positive], axis: 0))
    #expect(guided.shape == [2, 3, 4])
    for i in 0..<guided.count {
      let expected = negative.scalars[i] + 7.5 * (positive.scalars[i] - negative.scalars[i])
      #expect(abs(guided.scalars[i] - expected) <= 1e-5 * max(1, abs(expected)))
    }
  }

  @Test func scaleOneSkipsTheNegativeBranch() throws {
    let guidance = try ClassifierFreeGuidance(scale: 1)
    let latents = seededTensor([1, 4, 2, 2], seed: 3)
    #expect(!guidance.usesNegativeBranch)
    #expect(guidance.modelInput(latents) == latents)
    #expect(guidance.guidedPrediction(latents) == latents)
    let guided = try ClassifierFreeGuidance(scale: 2)
    #expect(guided.modelInput(latents).shape == [2, 4, 2, 2])
  }

  /// With φ = 1 each item of the result has the positive prediction's standard deviation.
  @Test func fullRescaleMatchesPositiveStandardDeviation() throws {
    let guidance = try ClassifierFreeGuidance(scale: 9, rescale: 1)
    let negative = seededTensor([2, 4, 3, 3], seed: 4)
    let positive = seededTensor([2, 4, 3, 3], seed: 5)
    let guided = guidance.combine(negative: negative, positive: positive)
    let size = 36
    for item in 0..<2 {
      let slice = { (t: Tensor) in Array(t.scalars[item * size..<(item + 1) * size]) }
      #expect(abs(standardDeviation(slice(guided)) - standardDeviation(slice(positive))) < 1e-4)
    }
  }

  @Test func rejectsOutOfRangeParameters() {
    #expect(throws: PipelineError.self) { try ClassifierFreeGuidance(scale: .nan) }
    #expect(throws: PipelineError.self) { try ClassifierFreeGuidance(scale: 7, rescale: 1.5) }
    #expect(throws: PipelineError.self) { try ClassifierFreeGuidance(scale: 7, rescale: -0.1) }
  }

  private func standardDeviation(_ values: [Float]) -> Double {
    let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
    let squares = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
    return (squares / Double(values.count - 1)).squareRoot()
  }
}

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

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

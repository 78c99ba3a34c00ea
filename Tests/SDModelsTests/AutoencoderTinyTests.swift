// TAESD (AutoencoderTiny) against diffusers on the tiny fixture (weights/make_taesd_fixtures.py):
// decoder and encoder on square and odd-sized inputs, the F16 copy of the same model, and the
// configuration errors a wrong folder gets.

import Foundation
import SDModels
import SDTestSupport
import SDTensor
import Testing

private let options = ComputeOptions(threadCount: 2)

private func taesd(_ name: String = "tiny-taesd") throws -> AutoencoderTiny {
  try AutoencoderTiny(AutoencoderTiny.folder(at: fixturesDirectory.appendingPathComponent(name)))
}

@Suite("TAESD (AutoencoderTiny) matches diffusers on the tiny fixture")
struct AutoencoderTinyTests {
  @Test("decoder and encoder, square and odd sizes; every tensor read")
  func decoderAndEncoder() throws {
    let model = try taesd()
    let reference = try fixture("taesd-sd15.safetensors")
    var worst: Float = 0
    for name in ["decode", "decode_odd"] {
      let out = model.decode(try reference.tensor("\(name).latents"), options: options)
      worst = max(worst, expectClose(out, try reference.tensor("\(name).out"), "\(name).out"))
    }
    for name in ["encode", "encode_odd"] {
      let latents = model.encode(try reference.tensor("\(name).image"), options: options)
      worst = max(
        worst, expectClose(latents, try reference.tensor("\(name).latents"), "\(name).latents"))
    }
    #expect(model.scaleFactor == 8)
    #expect(model.configuration.scalingFactor == 1)
    print("TAESD max |Δ|/max(1,|ref|) \(worst)")
  }

  @Test("an F16 folder loads (widened to F32) and decodes as diffusers' upcast model")
  func halfPrecisionFolder() throws {
    let folder = fixturesDirectory.appendingPathComponent("tiny-taesd-fp16")
    let file = try SafeTensorsFile(
      path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
    #expect(file.entries.values.allSatisfy { $0.dtype == .f16 })
    let reference = try fixture("taesd-sd15.safetensors")
    let out = try taesd("tiny-taesd-fp16").decode(
      try reference.tensor("decode.latents"), options: options)
    let worst = expectClose(out, try reference.tensor("fp16.decode.out"), "fp16.decode.out")
    print("TAESD fp16 max |Δ|/max(1,|ref|) \(worst)")
  }

  @Test("the default configuration is diffusers' AutoencoderTiny()")
  func defaultConfiguration() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let file = folder.appendingPathComponent("config.json")
    try Data(#"{"_class_name": "AutoencoderTiny"}"#.utf8).write(to: file)
    #expect(try AutoencoderTinyConfiguration(contentsOf: file) == .taesd)
  }

  /// (config.json text, what the one-line error must say).
  static let badConfigurations: [(String, String)] = [
    (#"{"_class_name": "AutoencoderKL"}"#, "found AutoencoderKL"),
    (#"{"decoder_block_out_channels": [64, 32, 64, 64]}"#, "the same width for every stage"),
    (#"{"num_decoder_blocks": [3, 3, 1]}"#, "'num_decoder_blocks' must be as long as"),
    (#"{"num_encoder_blocks": [1, -3, 3, 3]}"#, "'num_encoder_blocks' must be a list of integers"),
    (#"{"encoder_block_out_channels": 64}"#, "'encoder_block_out_channels' must be a list"),
    (#"{"act_fn": "mish"}"#, "'act_fn' must be relu, silu, swish or gelu (found mish)"),
    (#"{"upsample_fn": "bilinear"}"#, "'upsample_fn' must be one of nearest"),
    (#"{"upsampling_scaling_factor": 0}"#, "'upsampling_scaling_factor' must be an integer"),
    (#"{"upsampling_scaling_factor": 8}"#, "at most 64"),
    (#"{"latent_channels": 1e9}"#, "'latent_channels' must be an integer"),
    (#"{"scaling_factor": 0}"#, "'scaling_factor' must be a number > 0"),
    (#"{"latent_shift": "half"}"#, "'latent_shift' must be a number"),
    ("[1, 2]", "not a JSON object"),
  ]

  @Test("a bad config.json names the file and key", arguments: 0..<badConfigurations.count)
  func badConfiguration(index: Int) throws {
    let (text, message) = Self.badConfigurations[index]
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let file = folder.appendingPathComponent("config.json")
    try Data(text.utf8).write(to: file)
    let error = #expect(throws: ModelError.self) {
      try AutoencoderTinyConfiguration(contentsOf: file)
    }
    let description = error?.description ?? ""
    #expect(description.contains(message), "\(description)")
    #expect(description.contains(file.path), "\(description)")
  }

  @Test("a folder without config.json or weights, or with a mis-shaped key, is refused by name")
  func badFolders() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let empty = #expect(throws: ModelError.self) { try AutoencoderTiny.folder(at: folder) }
    #expect(empty?.description.contains("no config.json") == true, "\(String(describing: empty))")

    let source = fixturesDirectory.appendingPathComponent("tiny-taesd")
    try FileManager.default.copyItem(
      at: source.appendingPathComponent("config.json"),
      to: folder.appendingPathComponent("config.json"))
    let noWeights = #expect(throws: ModelError.self) { try AutoencoderTiny.folder(at: folder) }
    #expect(
      noWeights?.description.contains("no diffusion_pytorch_model.safetensors") == true,
      "\(String(describing: noWeights))")

    // The fixture's config with wider decoder stages than its weights have.
    let data = try Data(contentsOf: source.appendingPathComponent("config.json"))
    var config = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    config["decoder_block_out_channels"] = [16, 16, 16, 16]
    try JSONSerialization.data(withJSONObject: config).write(
      to: folder.appendingPathComponent("config.json"))
    try FileManager.default.copyItem(
      at: source.appendingPathComponent("diffusion_pytorch_model.safetensors"),
      to: folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))
    let misshaped = #expect(throws: ModelError.self) {
      try AutoencoderTiny(AutoencoderTiny.folder(at: folder))
    }
    #expect(
      misshaped?.description.contains("decoder.layers.0.weight") == true,
      "\(String(describing: misshaped))")
  }

  @Test("a cancelled pass returns zeros of the output's shape")
  func cancellation() throws {
    let model = try taesd()
    var cancelled = options
    cancelled.cancellation = CancellationFlag()
    cancelled.cancellation?.cancel()
    let latents = seededTensor([1, 4, 5, 7], seed: 3)
    let image = model.decode(latents, options: cancelled)
    #expect(image.shape == [1, 3, 40, 56] && image.scalars.allSatisfy { $0 == 0 })
    let encoded = model.encode(seededTensor([1, 3, 40, 56], seed: 4), options: cancelled)
    #expect(encoded.shape == [1, 4, 5, 7] && encoded.scalars.allSatisfy { $0 == 0 })
  }
}

private func temporaryFolder() throws -> URL {
  let url = FileManager.default.temporaryDirectory.appendingPathComponent(
    "taesd-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  return url
}

// Level 2 checks: the tiny random-weight SD 1.x- and 2.x-like models of weights/fixtures,
// run on dumped inputs, against the activations diffusers/transformers produced
// (weights/FIXTURES.md lists every tensor).

import Foundation
import SDModels
import SDTestSupport
import SDTensor
import Testing

private let options = ComputeOptions(threadCount: 2)

private func modelFolder(_ model: String, _ part: String) -> URL {
  fixturesDirectory.appendingPathComponent(model).appendingPathComponent(part)
}

/// A tiny fixture model (`tiny-sd15`, `tiny-sd2`) opened as the pipeline opens models.
private func tinyModel(_ variant: String) throws -> ModelFolder {
  try ModelFolder(at: fixturesDirectory.appendingPathComponent("tiny-\(variant)"))
}

@Suite("Models match diffusers/transformers on the tiny fixtures")
struct ModelReferenceTests {
  @Test("CLIP text encoder: every layer and the last hidden state", arguments: ["sd15", "sd2"])
  func textEncoder(variant: String) throws {
    let model = try tinyModel(variant).loadTextEncoder()
    let reference = try fixture("clip-\(variant).safetensors")
    var worst: Float = 0
    for prompt in 0..<4 {
      let ids = try reference.tensor("prompt\(prompt).ids").scalars.map { Int($0) }
      let states = model.hiddenStates([ids], options: options)
      for (layer, state) in states.enumerated() {
        worst = max(
          worst,
          expectClose(
            state, try reference.tensor("prompt\(prompt).hidden.\(layer)"),
            "prompt\(prompt).hidden.\(layer)"))
      }
      worst = max(
        worst,
        expectClose(
          model([ids], options: options), try reference.tensor("prompt\(prompt).last_hidden_state"),
          "prompt\(prompt).last_hidden_state"))
    }
    print("CLIP \(variant) max |Δ|/max(1,|ref|) \(worst)")
  }

  @Test("UNet: time embedding, every block and the output, batch 2", arguments: ["sd15", "sd2"])
  func unet(variant: String) throws {
    let model = try tinyModel(variant).loadUNet()
    let reference = try fixture("unet-\(variant).safetensors")
    var worst: Float = 0
    for name in ["case0", "case1"] {
      var observed: [String: Tensor] = [:]
      let out = model(
        try reference.tensor("\(name).sample"),
        timesteps: try reference.tensor("\(name).timesteps").scalars,
        context: try reference.tensor("\(name).encoder_hidden_states"), options: options
      ) { observed[$0] = $1 }
      for (block, value) in observed.sorted(by: { $0.key < $1.key }) {
        worst = max(
          worst,
          expectClose(
            value, try reference.tensor("\(name).\(block)"), "\(variant) \(name).\(block)"))
      }
      worst = max(
        worst, expectClose(out, try reference.tensor("\(name).out"), "\(variant) \(name).out"))
    }
    print("UNet \(variant) max |Δ|/max(1,|ref|) \(worst)")
  }

  @Test("a guided batch (one latent in both rows) gives each row what it gets alone")
  func guidedBatchRows() throws {
    let model = try tinyModel("sd15").loadUNet()
    let reference = try fixture("unet-sd15.safetensors")
    let latent = split(try reference.tensor("case0.sample"), sizes: [1, 1], axis: 0)[0]
    let contexts = chunk(try reference.tensor("case0.encoder_hidden_states"), 2, axis: 0)
    let timestep = try reference.tensor("case0.timesteps").scalars[0]
    let guided = model(
      concatenate([latent, latent], axis: 0), timesteps: [timestep, timestep],
      context: concatenate(contexts, axis: 0), options: options)
    for (row, output) in chunk(guided, 2, axis: 0).enumerated() {
      let alone = model(latent, timesteps: [timestep], context: contexts[row], options: options)
      if Runtime.usesPortableGEMM {
        #expect(output == alone, "row \(row)")
      } else {
        _ = expectClose(output, alone, "row \(row)")
      }
    }
  }

  @Test("VAE: decoder blocks and image, encoder mean/logvar and sample")
  func autoencoder() throws {
    let vae = try tinyModel("sd15").loadVAE()
    let reference = try fixture("vae.safetensors")
    var observed: [String: Tensor] = [:]
    let image = vae.decoder(try reference.tensor("decode.latents"), options: options) {
      observed[$0] = $1
    }
    var worst: Float = 0
    for (block, value) in observed {
      worst = max(
        worst, expectClose(value, try reference.tensor("decode.\(block)"), "decode.\(block)"))
    }
    worst = max(worst, expectClose(image, try reference.tensor("decode.out"), "decode.out"))
    var encoderMid: Tensor?
    _ = vae.encoder(try reference.tensor("encode.image"), options: options) { encoderMid = $1 }
    if let encoderMid {
      worst = max(
        worst, expectClose(encoderMid, try reference.tensor("encode.mid_block"), "encode.mid_block")
      )
    }
    let (mean, logVariance) = vae.encode(try reference.tensor("encode.image"), options: options)
    worst = max(worst, expectClose(mean, try reference.tensor("encode.mean"), "encode.mean"))
    worst = max(
      worst, expectClose(logVariance, try reference.tensor("encode.logvar"), "encode.logvar"))
    let noise = try reference.tensor("encode.noise")
    let sample = mean + logVariance.map { ($0 * 0.5).exp() } * noise
    worst = max(worst, expectClose(sample, try reference.tensor("encode.sample"), "encode.sample"))
    print("VAE max |Δ|/max(1,|ref|) \(worst)")
  }

  /// A cancel during a pass skips the blocks after the one running: the UNet cancelled in its
  /// first down block, the VAE decoder in its mid block, each return zeros of the output's shape
  /// without reaching the later blocks; attention cancelled beforehand computes nothing.
  @Test func cancellationStopsBetweenBlocks() throws {
    let unet = try tinyModel("sd15").loadUNet()
    let reference = try fixture("unet-sd15.safetensors")
    var cancellable = options
    cancellable.cancellation = CancellationFlag()
    var reached: [String] = []
    let sample = try reference.tensor("case0.sample")
    let out = unet(
      sample, timesteps: try reference.tensor("case0.timesteps").scalars,
      context: try reference.tensor("case0.encoder_hidden_states"), options: cancellable
    ) { name, _ in
      reached.append(name)
      if name == "conv_in" { cancellable.cancellation?.cancel() }
    }
    #expect(reached == ["time_embedding", "conv_in"])
    #expect(out.shape == [sample.shape[0], 4, sample.shape[2], sample.shape[3]])
    #expect(out.scalars.allSatisfy { $0 == 0 })

    let vae = try tinyModel("sd15").loadVAE()
    let latents = try fixture("vae.safetensors").tensor("decode.latents")
    cancellable.cancellation = CancellationFlag()
    reached = []
    let image = vae.decoder(latents, options: cancellable) { name, _ in
      reached.append(name)
      if name == "conv_in" { cancellable.cancellation?.cancel() }
    }
    #expect(reached == ["conv_in"])
    #expect(image.shape == vae.decoder(latents, options: options).shape)

    let tokens = Tensor(shape: [1, 77, 64], scalars: (0..<77 * 64).map { Float($0 % 7) })
    #expect(
      scaledDotProductAttention(
        query: tokens, key: tokens, value: tokens, heads: 2, options: cancellable
      ).scalars.allSatisfy { $0 == 0 })
  }

  @Test("every tensor of the fixture models is read by some layer")
  func noLeftoverWeights() throws {
    for variant in ["sd15", "sd2"] {
      let model = try tinyModel(variant)
      _ = try (model.loadTextEncoder(), model.loadUNet(), model.loadVAE())
      #expect(model.unusedWeights() == [], "\(variant)")
    }
  }

  @Test("a missing or mis-shaped UNet key is refused with its name and shapes")
  func badWeights() throws {
    let folder = modelFolder("tiny-sd15", "unet")
    let config = try UNetConfiguration(contentsOf: folder.appendingPathComponent("config.json"))
    let original = try SafeTensorsFile(
      path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
    var tensors: [String: Tensor] = [:]
    for name in original.names { tensors[name] = try original.tensor(name) }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "unet-bad-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }

    var missing = tensors
    missing["conv_in.bias"] = nil
    let missingPath = directory.appendingPathComponent("missing.safetensors").path
    try SafeTensorsWriter.write(missing, to: missingPath)
    #expect(throws: WeightError.missingTensor(key: "conv_in.bias", file: missingPath)) {
      try UNet2DConditionModel(configuration: config, weights: WeightStore(paths: [missingPath]))
    }

    var wrong = tensors
    wrong["mid_block.resnets.0.conv1.weight"] = Tensor(zeros: [64, 64, 1, 1])
    let wrongPath = directory.appendingPathComponent("wrong.safetensors").path
    try SafeTensorsWriter.write(wrong, to: wrongPath)
    #expect(
      throws: WeightError.shapeMismatch(
        key: "mid_block.resnets.0.conv1.weight", expected: [64, 64, 3, 3], found: [64, 64, 1, 1],
        file: wrongPath)
    ) {
      try UNet2DConditionModel(configuration: config, weights: WeightStore(paths: [wrongPath]))
    }
  }
}

extension Float {
  fileprivate func exp() -> Float { Foundation.exp(self) }
}

/// Tiled decoding against diffusers' `enable_tiling()` on the tiny VAE (tiles of 8 latents,
/// 25 % overlap, weights/make_vae_tiling_fixture.py).
@Suite struct VAETilingTests {
  @Test func tiledDecodeMatchesDiffusers() throws {
    let reference = try fixture("vae-tiled.safetensors")
    let vae = try tinyModel("sd15").loadVAE()
    let latents = try reference.tensor("latents")
    let options = ComputeOptions(threadCount: 2)
    expectClose(
      vae.decodeTiled(latents, tile: 8, options: options), try reference.tensor("tiled"), "tiled")
    expectClose(
      vae.decode(latents, options: options), try reference.tensor("untiled"), "untiled")
  }
}

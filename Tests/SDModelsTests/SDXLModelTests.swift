// SDXL's model parts on the tiny SDXL of weights/make_sdxl_fixtures.py against diffusers and
// transformers: both text encoders (every layer, the penultimate states side by side, the
// pooled projection), the UNet with its added embedding (every block), and the VAE.

import Foundation
import SDModels
import SDTestSupport
import SDTensor
import Testing

private let options = ComputeOptions(threadCount: 2)
private let sdxl = Result {
  try ModelFolder(at: fixturesDirectory.appendingPathComponent("tiny-sdxl"))
}

@Suite struct SDXLModelTests {
  @Test func folderHasTwoEncodersAndForcesZeros() throws {
    let folder = try sdxl.get()
    #expect(folder.textEncoder2 != nil && folder.tokenizer2 != nil)
    #expect(folder.forcesZerosForEmptyPrompt)
    #expect(folder.tokenizer2?.padID == 0)
    let unet = folder.unet.configuration
    #expect(unet.transformerLayersPerBlock == [1, 2, 3])
    #expect(
      unet.textTimeEmbedding
        == TextTimeEmbeddingConfiguration(timeEmbeddingWidth: 8, inputWidth: 80))
    _ = try (
      folder.loadTextEncoder(), folder.loadTextEncoder2(), folder.loadUNet(), folder.loadVAE()
    )
    #expect(folder.unusedWeights() == [])
  }

  @Test func textEncodersEveryLayerAndThePooledProjection() throws {
    let folder = try sdxl.get()
    let first = try folder.loadTextEncoder()
    let second = try #require(try folder.loadTextEncoder2())
    #expect(first.textProjection == nil && second.textProjection != nil)
    let reference = try fixture("clip-sdxl.safetensors")
    var worst: Float = 0
    for prompt in 0..<3 {
      let key = "prompt\(prompt)"
      let ids = try reference.tensor("\(key).ids").scalars.map { Int($0) }
      let ids2 = try reference.tensor("\(key).ids_2").scalars.map { Int($0) }
      #expect(
        folder.tokenizer2?.inputIDs(
          ["", "a photo of a cat", "a red apple on a wooden table, green tones, highly detailed"][
            prompt]) == ids2)
      for (model, tokens, tag) in [(first, ids, "te1"), (second, ids2, "te2")] {
        for (layer, state) in model.hiddenStates([tokens], options: options).enumerated() {
          worst = max(
            worst,
            expectClose(
              state, try reference.tensor("\(key).\(tag).hidden.\(layer)"), "\(key).\(tag).\(layer)"
            ))
        }
      }
      let eos = ids2.firstIndex(of: 49407) ?? 0
      let (states1, none) = first.encode(
        tokenEmbeddings: first.tokenEmbeddings(ids), output: .penultimate,
        skipLastLayers: 0, eosPosition: eos, options: options)
      #expect(none == nil)
      let (states2, pooled) = second.encode(
        tokenEmbeddings: second.tokenEmbeddings(ids2), output: .penultimate,
        skipLastLayers: 0, eosPosition: eos, options: options)
      worst = max(
        worst,
        expectClose(
          concatenate([states1, states2], axis: 2), try reference.tensor("\(key).prompt_embeds"),
          "\(key).prompt_embeds"))
      worst = max(
        worst,
        expectClose(try #require(pooled), try reference.tensor("\(key).pooled"), "\(key).pooled"))
    }
    print("SDXL text encoders max |Δ|/max(1,|ref|) \(worst)")
  }

  @Test func unetWithTheAddedEmbeddingEveryBlock() throws {
    let unet = try sdxl.get().loadUNet()
    let reference = try fixture("unet-sdxl.safetensors")
    var worst: Float = 0
    for name in ["case0", "case1"] {
      let timeIDs = try reference.tensor("\(name).time_ids")
      let added = AddedConditions(
        textEmbeds: try reference.tensor("\(name).text_embeds"),
        timeIDs: (0..<timeIDs.shape[0]).map { Array(timeIDs.scalars[$0 * 6..<($0 + 1) * 6]) })
      var observed: [String: Tensor] = [:]
      let out = unet(
        try reference.tensor("\(name).sample"),
        timesteps: try reference.tensor("\(name).timesteps").scalars,
        context: CrossAttentionContext(try reference.tensor("\(name).encoder_hidden_states")),
        added: added, options: options
      ) { observed[$0] = $1 }
      #expect(observed.keys.contains("add_embedding"))
      for (block, value) in observed.sorted(by: { $0.key < $1.key }) {
        worst = max(
          worst, expectClose(value, try reference.tensor("\(name).\(block)"), "\(name).\(block)"))
      }
      worst = max(worst, expectClose(out, try reference.tensor("\(name).out"), "\(name).out"))
    }
    print("SDXL UNet max |Δ|/max(1,|ref|) \(worst)")
  }

  @Test func vaeWithSDXLScaling() throws {
    let vae = try sdxl.get().loadVAE()
    #expect(vae.configuration.scalingFactor == 0.13025)
    let reference = try fixture("vae-sdxl.safetensors")
    let image = vae.decoder(try reference.tensor("decode.latents"), options: options)
    var worst = expectClose(image, try reference.tensor("decode.image"), "decode.image")
    let (mean, logVariance) = vae.encode(try reference.tensor("encode.image"), options: options)
    worst = max(worst, expectClose(mean, try reference.tensor("encode.mean"), "encode.mean"))
    worst = max(
      worst, expectClose(logVariance, try reference.tensor("encode.logvar"), "encode.logvar"))
    print("SDXL VAE max |Δ|/max(1,|ref|) \(worst)")
  }
}

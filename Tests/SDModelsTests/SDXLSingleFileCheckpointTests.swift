// SDXL single-file checkpoints (`sd_xl_base_1.0.safetensors` layout): how a file is recognised,
// the presets it gets without a configuration folder, and every tensor of the tiny SDXL's
// single file (weights/make_sdxl_single_file_fixture.py) read back as the folder's, the split
// q/k/v and the transposed projection included.

import Foundation
import SDModels
import SDTestSupport
import SDTensor
import Testing

@Suite struct SDXLSingleFileCheckpointTests {
  let folder = fixturesDirectory.appendingPathComponent("tiny-sdxl")
  let singleFile = fixturesDirectory.appendingPathComponent("tiny-sdxl-single-file.safetensors")

  /// The stored names a full-size SDXL base file has, as our key maps generate them.
  private func fullSizeNames() -> Set<String> {
    let maps = [
      SingleFileCheckpoint.unetKeyMap(.stableDiffusionXL),
      SingleFileCheckpoint.vaeKeyMap(.stableDiffusionXL),
      SingleFileCheckpoint.textEncoderKeyMap(
        .stableDiffusionXL, storedPrefix: "conditioner.embedders.0.transformer.text_model."),
      SingleFileCheckpoint.openCLIPTextEncoderKeyMap(
        .stableDiffusionXLTextEncoder2, storedPrefix: "conditioner.embedders.1.model."),
    ]
    return Set(maps.flatMap { $0.values.map(\.storedName) })
  }

  @Test func fullSizeKeysAreDetectedAsSDXL() {
    let names = fullSizeNames()
    #expect(SingleFileCheckpoint.family(ofTensorNames: names) == .stableDiffusionXL)
    // Names of the released file: diffusers' detection key, the added embedding, the tenth
    // transformer layer at the deepest level and in the mid block, the upsampler after an
    // attention level.
    for name in [
      "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
      "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight",
      "conditioner.embedders.1.model.text_projection",
      "conditioner.embedders.1.model.positional_embedding",
      "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.label_emb.0.2.bias",
      "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight",
      "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.2.weight",
      "model.diffusion_model.output_blocks.2.1.transformer_blocks.9.norm3.weight",
      "model.diffusion_model.output_blocks.2.2.conv.weight",
      "model.diffusion_model.output_blocks.5.2.conv.weight",
      "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
    ] {
      #expect(names.contains(name), "\(name)")
    }
    // 32 layers of 12 open_clip tensors (in_proj read three times), plus 5 outside them.
    let openCLIP = names.filter { $0.hasPrefix("conditioner.embedders.1.model.") }
    #expect(openCLIP.count == 32 * 12 + 5)
    // An SD 1.x file's names are not.
    let sd1 = SingleFileCheckpoint.textEncoderKeyMap(
      .stableDiffusion15, storedPrefix: "cond_stage_model.transformer.text_model."
    ).values.map(\.storedName)
    #expect(SingleFileCheckpoint.family(ofTensorNames: sd1) == .stableDiffusion1)
  }

  @Test func singleFileWithoutConfigurationsGetsSDXLBasePresets() throws {
    let url = try writeSyntheticSDXLSingleFile()
    defer { try? FileManager.default.removeItem(at: url) }
    let opened = try ModelFolder(at: url)
    #expect(opened.textEncoder.configuration == .stableDiffusionXL)
    #expect(opened.textEncoder2?.configuration == .stableDiffusionXLTextEncoder2)
    #expect(opened.unet.configuration == .stableDiffusionXL)
    #expect(opened.vae.configuration == .stableDiffusionXL)
    #expect(opened.vae.configuration.scalingFactor == 0.13025)
    #expect(opened.unet.configuration.textTimeEmbedding?.pooledWidth == 1280)
    #expect(opened.textEncoder2?.configuration.projectionWidth == 1280)
    // tokenizer_2 pads with "!" (id 0), the first tokenizer with EOS.
    #expect(opened.tokenizer.padID == 49407 && opened.tokenizer2?.padID == 0)
    #expect(opened.forcesZerosForEmptyPrompt)
    #expect(
      opened.schedulerConfigurationFile?.lastPathComponent == "sdxl-base-scheduler_config.json")
  }

  @Test func configurationFolderSuppliesBothEncodersTokenizersAndScheduler() throws {
    let fromFolder = try ModelFolder(at: folder)
    let fromFile = try ModelFolder(at: singleFile, configurationsFrom: folder)
    #expect(fromFile.textEncoder.configuration == fromFolder.textEncoder.configuration)
    #expect(fromFile.textEncoder2?.configuration == fromFolder.textEncoder2?.configuration)
    #expect(fromFile.unet.configuration == fromFolder.unet.configuration)
    #expect(fromFile.vae.configuration == fromFolder.vae.configuration)
    #expect(fromFile.tokenizer2?.padID == fromFolder.tokenizer2?.padID)
    #expect(fromFile.forcesZerosForEmptyPrompt)
    #expect(fromFile.schedulerConfigurationFile == fromFolder.schedulerConfigurationFile)
  }

  /// Every weight of the folder, read from the single file under the same diffusers key, is
  /// the same tensor: q/k/v as rows of `in_proj_weight`, `text_projection` transposed.
  @Test func everyFolderTensorReadsTheSameFromTheSingleFile() throws {
    let fromFolder = try ModelFolder(at: folder)
    let fromFile = try ModelFolder(at: singleFile, configurationsFrom: folder)
    let parts = try [
      (fromFolder.textEncoder.weights, fromFile.textEncoder.weights),
      (#require(fromFolder.textEncoder2?.weights), #require(fromFile.textEncoder2?.weights)),
      (fromFolder.unet.weights, fromFile.unet.weights),
      (fromFolder.vae.weights, fromFile.vae.weights),
    ]
    var compared = 0
    for (expected, actual) in parts {
      for key in expected.keys {
        let shape = try #require(expected.shape(of: key))
        // transformers 5 saves the first encoder without the `text_model.` level.
        let mapped = actual.contains(key) ? key : "text_model.\(key)"
        #expect(
          try actual.tensor(mapped, shape: shape) == expected.tensor(key, shape: shape), "\(key)")
        compared += 1
      }
    }
    #expect(compared == 52 + 53 + 838 + 180)
    // And the folder's keys reach every tensor of the file (`logit_scale` aside).
    #expect(fromFile.unusedWeights() == [])
  }

  @Test func refinerAndMissingSecondEncoderConfigurationAreRefused() throws {
    let url = try writeSyntheticSDXLSingleFile()
    defer { try? FileManager.default.removeItem(at: url) }
    #expect {
      _ = try SingleFileCheckpoint(
        path: url.path, textEncoder: .stableDiffusionXL, unet: .stableDiffusionXL,
        vae: .stableDiffusionXL)
    } throws: { error in
      guard case .invalidConfiguration(_, let reason) = error as? ModelError else { return false }
      return reason.contains("second text encoder")
    }
    let refiner = FileManager.default.temporaryDirectory.appendingPathComponent(
      "sdxl-refiner-\(UUID().uuidString).safetensors")
    defer { try? FileManager.default.removeItem(at: refiner) }
    try SafeTensorsWriter.write(
      [
        "conditioner.embedders.0.model.text_projection": Tensor(zeros: [1]),
        "model.diffusion_model.label_emb.0.0.weight": Tensor(zeros: [1]),
      ], to: refiner.path)
    #expect {
      _ = try ModelFolder(at: refiner)
    } throws: { error in
      guard case .invalidConfiguration(_, let reason) = error as? ModelError else { return false }
      return reason.contains("SDXL refiner")
    }
  }
}

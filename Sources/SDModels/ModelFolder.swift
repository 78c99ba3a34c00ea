// The files of one Stable Diffusion model, resolved once: a diffusers folder (`text_encoder/`,
// `tokenizer/`, `unet/`, `vae/`, `scheduler/`) or a single-file checkpoint read with the
// configurations of such a folder (or SD 1.5's or SDXL base's). Every part's configuration,
// weight store (the `.fp16` variant chosen when weights stay in half precision) and tokenizer
// come from here, for the pipeline, `sd verify` and the tests alike; so do the keys no model read.

import Foundation
import SDTensor

/// A model's parts as files: configurations, weight stores and the tokenizer.
public struct ModelFolder: Sendable {
  /// One model part: what to build and where its weights are read from.
  public struct Part<Configuration: Sendable>: Sendable {
    /// The part's architecture: its `config.json`, or for a single file the configuration
    /// folder's or the SD 1.5 preset (an inpainting UNet's `inChannels` read from the file).
    public let configuration: Configuration
    /// The part's weights by diffusers key (a single file's keys are mapped onto them).
    public let weights: WeightStore
  }

  /// The folder or file the model was opened from.
  public let location: URL
  /// `text_encoder/`: the CLIP text encoder.
  public let textEncoder: Part<CLIPTextConfiguration>
  /// `unet/`: the denoising UNet.
  public let unet: Part<UNetConfiguration>
  /// `vae/`: the autoencoder.
  public let vae: Part<AutoencoderConfiguration>
  /// `tokenizer/`, or the bundled CLIP vocabulary when the model has none.
  public let tokenizer: CLIPTokenizer
  /// SDXL's `text_encoder_2/` (OpenCLIP ViT-bigG with `text_projection`); nil for SD 1.x/2.x.
  public let textEncoder2: Part<CLIPTextConfiguration>?
  /// SDXL's `tokenizer_2/` (CLIP's vocabulary, padding with "!").
  public let tokenizer2: CLIPTokenizer?
  /// `force_zeros_for_empty_prompt` of `model_index.json` (SDXL; default true there): without
  /// a negative prompt the unconditional row is zeros, not the encoding of "".
  public let forcesZerosForEmptyPrompt: Bool
  /// `scheduler/scheduler_config.json` when the model has one; for an SDXL single file without
  /// a configuration folder that has one, SDXL base's (bundled).
  public let schedulerConfigurationFile: URL?
  /// The single-file checkpoint, whose leftover keys are reported in its own names.
  private let checkpoint: SingleFileCheckpoint?

  /// Opens `url`: a diffusers folder, or a `.safetensors` single-file SD 1.x or SDXL checkpoint
  /// whose configurations, tokenizers and scheduler come from `configurationFolder` (default:
  /// SD 1.5's, or SDXL base's for a file with SDXL's keys, and the bundled vocabulary). With
  /// `halfPrecisionWeights` layer weights stay in half precision, and a folder's
  /// `*.fp16.safetensors` variant is preferred when both exist.
  /// - Throws: `ModelError` naming the missing or wrong file; pickles (`.ckpt`, `.pt`, `.bin`)
  ///   are refused, since loading them can run code.
  public init(
    at url: URL, configurationsFrom configurationFolder: URL? = nil,
    halfPrecisionWeights: Bool = false
  ) throws(ModelError) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
      throw .weights(.unreadableFile(path: url.path, reason: "it does not exist"))
    }
    location = url
    let folder = isDirectory.boolValue ? url : configurationFolder
    // A single file is opened first: its keys tell SD 1.x from SDXL, whose presets differ.
    let singleFile = isDirectory.boolValue ? nil : try Self.openSingleFile(url)
    let isXL =
      singleFile.map {
        SingleFileCheckpoint.family(ofTensorNames: $0.entries.keys) == .stableDiffusionXL
      } ?? false
    func config<Configuration>(
      _ part: String, preset: Configuration, _ read: (URL) throws(ModelError) -> Configuration
    ) throws(ModelError) -> Configuration {
      guard let folder else { return preset }
      return try read(folder.appendingPathComponent("\(part)/config.json"))
    }
    let textConfiguration = try config(
      "text_encoder", preset: isXL ? .stableDiffusionXL : .stableDiffusion15,
      CLIPTextConfiguration.init(contentsOf:))
    let unetConfiguration = try config(
      "unet", preset: isXL ? .stableDiffusionXL : .stableDiffusion15,
      UNetConfiguration.init(contentsOf:))
    let vaeConfiguration = try config(
      "vae", preset: isXL ? .stableDiffusionXL : .stableDiffusion15,
      AutoencoderConfiguration.init(contentsOf:))
    switch singleFile {
    case nil:
      func store(_ part: String, _ stem: String) throws(ModelError) -> WeightStore {
        try WeightStore.open(
          directory: url.appendingPathComponent(part), stem: stem,
          keepsHalfPrecision: halfPrecisionWeights)
      }
      textEncoder = Part(
        configuration: textConfiguration, weights: try store("text_encoder", "model"))
      unet = Part(
        configuration: unetConfiguration, weights: try store("unet", "diffusion_pytorch_model"))
      vae = Part(
        configuration: vaeConfiguration, weights: try store("vae", "diffusion_pytorch_model"))
      let secondEncoder = url.appendingPathComponent("text_encoder_2")
      if FileManager.default.fileExists(atPath: secondEncoder.path) {
        textEncoder2 = Part(
          configuration: try CLIPTextConfiguration(
            contentsOf: secondEncoder.appendingPathComponent("config.json")),
          weights: try store("text_encoder_2", "model"))
        tokenizer2 = try CLIPTokenizer(directory: url.appendingPathComponent("tokenizer_2"))
      } else {
        (textEncoder2, tokenizer2) = (nil, nil)
      }
      let index = try? ConfigReader(contentsOf: url.appendingPathComponent("model_index.json"))
      forcesZerosForEmptyPrompt =
        try index?.bool("force_zeros_for_empty_prompt", default: textEncoder2 != nil)
        ?? (textEncoder2 != nil)
      checkpoint = nil
    case let singleFile?:
      let textConfiguration2 =
        isXL
        ? try config(
          "text_encoder_2", preset: .stableDiffusionXLTextEncoder2,
          CLIPTextConfiguration.init(contentsOf:)) : nil
      let opened = try SingleFileCheckpoint(
        file: singleFile, textEncoder: textConfiguration, textEncoder2: textConfiguration2,
        unet: unetConfiguration, vae: vaeConfiguration, keepsHalfPrecision: halfPrecisionWeights)
      textEncoder = Part(configuration: textConfiguration, weights: opened.textEncoder)
      if let textConfiguration2, let weights = opened.textEncoder2 {
        textEncoder2 = Part(configuration: textConfiguration2, weights: weights)
        // SDXL's tokenizer_2 is CLIP's vocabulary padding with "!", id 0 (open_clip pads
        // with zeros).
        let tokenizerFolder2 = folder?.appendingPathComponent("tokenizer_2")
        if let tokenizerFolder2, FileManager.default.fileExists(atPath: tokenizerFolder2.path) {
          tokenizer2 = try CLIPTokenizer(directory: tokenizerFolder2)
        } else {
          tokenizer2 = try CLIPTokenizer.bundled(padToken: "!")
        }
      } else {
        (textEncoder2, tokenizer2) = (nil, nil)
      }
      // As for a folder: model_index.json's force_zeros_for_empty_prompt, true for SDXL.
      let index = folder.flatMap {
        try? ConfigReader(contentsOf: $0.appendingPathComponent("model_index.json"))
      }
      forcesZerosForEmptyPrompt =
        try index?.bool("force_zeros_for_empty_prompt", default: textEncoder2 != nil)
        ?? (textEncoder2 != nil)
      // An inpainting checkpoint (sd-v1-5-inpainting) differs from its base only in conv_in's
      // input channels; the file says which it is, the configuration folder cannot.
      var unetFromFile = unetConfiguration
      if let inputs = opened.unet.shape(of: "conv_in.weight")?.dropFirst().first,
        inputs == 2 * vaeConfiguration.latentChannels + 1
      {
        unetFromFile.inChannels = inputs
      }
      unet = Part(configuration: unetFromFile, weights: opened.unet)
      vae = Part(configuration: vaeConfiguration, weights: opened.vae)
      checkpoint = opened
    }
    let tokenizerFolder = folder?.appendingPathComponent("tokenizer")
    if let tokenizerFolder, FileManager.default.fileExists(atPath: tokenizerFolder.path) {
      tokenizer = try CLIPTokenizer(directory: tokenizerFolder)
    } else {
      tokenizer = try CLIPTokenizer.bundled()
    }
    let schedulerFile = folder?.appendingPathComponent("scheduler/scheduler_config.json")
    let folderScheduler = schedulerFile.flatMap {
      FileManager.default.fileExists(atPath: $0.path) ? $0 : nil
    }
    if let folderScheduler {
      schedulerConfigurationFile = folderScheduler
    } else if !isXL {
      schedulerConfigurationFile = nil
    } else {
      // SDXL base's scheduler_config.json (EulerDiscreteScheduler, scaled_linear
      // 0.00085–0.012, leading spacing, steps_offset 1), shipped with the package: without it
      // the pipeline would fall back to SD 1.5's PNDM.
      let name = "sdxl-base-scheduler_config"
      guard
        let bundled = Bundle.module.url(
          forResource: name, withExtension: "json", subdirectory: "Resources")
      else {
        throw .invalidConfiguration(
          file: "Resources/\(name).json", reason: "missing from the SDModels bundle")
      }
      schedulerConfigurationFile = bundled
    }
  }

  /// Opens a single-file checkpoint: safetensors only.
  /// - Throws: `ModelError.weights` for a pickle (loading one can run code), a file of another
  ///   kind, or an unreadable one.
  private static func openSingleFile(_ url: URL) throws(ModelError) -> SafeTensorsFile {
    let suffix = url.pathExtension.lowercased()
    guard !["ckpt", "pt", "pth", "bin", "pkl"].contains(suffix) else {
      throw .weights(
        .unreadableFile(
          path: url.path,
          reason: "a PyTorch pickle; only safetensors are read (a pickle can run code when loaded)"
        ))
    }
    guard suffix == "safetensors" else {
      throw .weights(
        .unreadableFile(
          path: url.path, reason: "neither a diffusers folder nor a .safetensors checkpoint"))
    }
    do { return try SafeTensorsFile(path: url.path) } catch { throw .weights(error) }
  }

  /// Builds the text encoder from its part.
  /// - Throws: `ModelError.weights` naming a missing or mis-shaped tensor.
  public func loadTextEncoder() throws(ModelError) -> CLIPTextModel {
    do {
      return try CLIPTextModel(
        configuration: textEncoder.configuration, weights: textEncoder.weights)
    } catch { throw .weights(error) }
  }

  /// Builds SDXL's second text encoder from its part; nil for models without one.
  /// - Throws: `ModelError.weights` naming a missing or mis-shaped tensor.
  public func loadTextEncoder2() throws(ModelError) -> CLIPTextModel? {
    guard let textEncoder2 else { return nil }
    do {
      return try CLIPTextModel(
        configuration: textEncoder2.configuration, weights: textEncoder2.weights)
    } catch { throw .weights(error) }
  }

  /// Builds the UNet from its part.
  /// - Throws: `ModelError.weights` naming a missing or mis-shaped tensor.
  public func loadUNet() throws(ModelError) -> UNet2DConditionModel {
    do {
      return try UNet2DConditionModel(configuration: unet.configuration, weights: unet.weights)
    } catch { throw .weights(error) }
  }

  /// Builds the VAE from its part.
  /// - Throws: `ModelError.weights` naming a missing or mis-shaped tensor.
  public func loadVAE() throws(ModelError) -> AutoencoderKL {
    do { return try AutoencoderKL(configuration: vae.configuration, weights: vae.weights) } catch {
      throw .weights(error)
    }
  }

  /// Tensors that no model read, once the models are built: empty for a well-formed model (a
  /// leftover means the checkpoint has parts this runtime ignores). CLIP's `position_ids`
  /// buffer, which some exports carry, is not counted.
  public func unusedWeights() -> [String] {
    checkpoint?.unusedKeys()
      ?? (textEncoder.weights.unreadKeys() + (textEncoder2?.weights.unreadKeys() ?? [])
      + unet.weights.unreadKeys() + vae.weights.unreadKeys())
      .filter { !$0.hasSuffix("position_ids") }
  }
}

// The files of one Stable Diffusion model, resolved once: a diffusers folder (`text_encoder/`,
// `tokenizer/`, `unet/`, `vae/`, `scheduler/`) or a single-file checkpoint read with the
// configurations of such a folder (or SD 1.5's). Every part's configuration, weight store (the
// `.fp16` variant chosen when weights stay in half precision) and tokenizer come from here, for
// the pipeline, `sd verify` and the tests alike; so do the keys no model read.

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
  /// `scheduler/scheduler_config.json` when the model has one.
  public let schedulerConfigurationFile: URL?
  /// The single-file checkpoint, whose leftover keys are reported in its own names.
  private let checkpoint: SingleFileCheckpoint?

  /// Opens `url`: a diffusers folder, or a `.safetensors` single-file SD 1.x checkpoint whose
  /// configurations, tokenizer and scheduler come from `configurationFolder` (default: SD 1.5's
  /// and the bundled vocabulary). With `halfPrecisionWeights` layer weights stay in half
  /// precision, and a folder's `*.fp16.safetensors` variant is preferred when both exist.
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
    func config<Configuration>(
      _ part: String, preset: Configuration, _ read: (URL) throws(ModelError) -> Configuration
    ) throws(ModelError) -> Configuration {
      guard let folder else { return preset }
      return try read(folder.appendingPathComponent("\(part)/config.json"))
    }
    let textConfiguration = try config(
      "text_encoder", preset: .stableDiffusion15, CLIPTextConfiguration.init(contentsOf:))
    let unetConfiguration = try config(
      "unet", preset: .stableDiffusion15, UNetConfiguration.init(contentsOf:))
    let vaeConfiguration = try config(
      "vae", preset: .stableDiffusion15, AutoencoderConfiguration.init(contentsOf:))
    if isDirectory.boolValue {
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
      checkpoint = nil
    } else {
      let suffix = url.pathExtension.lowercased()
      guard !["ckpt", "pt", "pth", "bin", "pkl"].contains(suffix) else {
        throw .weights(
          .unreadableFile(
            path: url.path,
            reason:
              "a PyTorch pickle; only safetensors are read (a pickle can run code when loaded)"))
      }
      guard suffix == "safetensors" else {
        throw .weights(
          .unreadableFile(
            path: url.path, reason: "neither a diffusers folder nor a .safetensors checkpoint"))
      }
      let opened = try SingleFileCheckpoint(
        path: url.path, textEncoder: textConfiguration, unet: unetConfiguration,
        vae: vaeConfiguration, keepsHalfPrecision: halfPrecisionWeights)
      textEncoder = Part(configuration: textConfiguration, weights: opened.textEncoder)
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
    schedulerConfigurationFile = schedulerFile.flatMap {
      FileManager.default.fileExists(atPath: $0.path) ? $0 : nil
    }
  }

  /// Builds the text encoder from its part.
  /// - Throws: `ModelError.weights` naming a missing or mis-shaped tensor.
  public func loadTextEncoder() throws(ModelError) -> CLIPTextModel {
    do {
      return try CLIPTextModel(
        configuration: textEncoder.configuration, weights: textEncoder.weights)
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
      ?? (textEncoder.weights.unreadKeys() + unet.weights.unreadKeys() + vae.weights.unreadKeys())
      .filter { !$0.hasSuffix("position_ids") }
  }
}

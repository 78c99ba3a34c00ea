// Turning latents into pictures: the full VAE or TAESD (diffusers' AutoencoderTiny, as
// `pipe.vae = AutoencoderTiny.from_pretrained("madebyollin/taesd")` does), for the final image
// and for the previews the progress callback can carry every N steps.

import Foundation
import SDModels
import SDTensor

/// Which model turns latents into the picture.
public enum LatentDecoder: String, Sendable, CaseIterable {
  /// The model's own VAE (`vae/`): the reference picture, ~3 s at 512×512 on two cores.
  case vae
  /// The tiny autoencoder attached with `withTinyAutoencoder(at:)` (TAESD): a few percent of
  /// the VAE's work, slightly softer detail.
  case tinyAutoencoder
}

/// Previews of the latents during a run, handed to the progress callback.
public struct PreviewSettings: Sendable, Equatable {
  /// A preview after every step whose 1-based index is a multiple of this (≥ 1).
  public var every: Int
  /// The decoder of the previews; nil: the tiny autoencoder when the pipeline has one, else the
  /// VAE (which costs a full decode per preview).
  public var decoder: LatentDecoder?

  /// Previews after steps `every`, 2·`every`, … decoded by `decoder` (see its property).
  public init(every: Int, decoder: LatentDecoder? = nil) {
    self.every = every
    self.decoder = decoder
  }
}

/// Latents decoded for a request: the decoder output in about [-1, 1] and its 8-bit picture.
struct DecodedLatents {
  let decoder: LatentDecoder
  let decoded: Tensor
  let image: RGBImage
}

extension StableDiffusionPipeline {
  /// This pipeline with the TAESD of `url` (a diffusers AutoencoderTiny folder: `config.json`
  /// and `diffusion_pytorch_model.safetensors`, F32 or F16, e.g. `madebyollin/taesd`), for
  /// requests whose `decoder` or `previews` name it. This pipeline stays as it was.
  /// - Throws: `PipelineError.model` naming the missing or wrong file or key;
  ///   `.invalidArgument(name: "tinyAutoencoder")` when its latents do not fit this model's.
  public func withTinyAutoencoder(at url: URL) throws(PipelineError) -> StableDiffusionPipeline {
    let part: ModelFolder.Part<AutoencoderTinyConfiguration>
    let model: AutoencoderTiny
    do {
      part = try AutoencoderTiny.folder(at: url)
      model = try AutoencoderTiny(part)
    } catch {
      throw .model(error)
    }
    var result = try withTinyAutoencoder(model)
    result.tinyAutoencoderWeights = part.weights
    return result
  }

  /// This pipeline with `model` as its tiny autoencoder (see `withTinyAutoencoder(at:)`).
  /// - Throws: `PipelineError.invalidArgument(name: "tinyAutoencoder")` when its latent
  ///   channels, pixels per latent or image channels differ from the VAE's.
  public func withTinyAutoencoder(_ model: AutoencoderTiny) throws(PipelineError)
    -> StableDiffusionPipeline
  {
    let tiny = model.configuration
    let full = vae.configuration
    for (what, ours, theirs) in [
      ("latent channels", tiny.latentChannels, full.latentChannels),
      ("pixels per latent", model.scaleFactor, vaeScaleFactor),
      ("image channels", tiny.outChannels, full.outChannels),
    ] where ours != theirs {
      throw .invalidArgument(
        name: "tinyAutoencoder",
        reason:
          "has \(ours) \(what), this model's VAE \(theirs): it is for another model family (madebyollin/taesd is SD 1.x/2.x's, taesdxl SDXL's)"
      )
    }
    var result = self
    result.tinyAutoencoder = model
    result.tinyAutoencoderWeights = nil
    return result
  }

  /// Refuses a request that names a tiny autoencoder this pipeline lacks, or previews every
  /// 0 steps.
  func validateDecoders(_ request: GenerationRequest) throws(PipelineError) {
    let names = [("decoder", request.decoder), ("previews.decoder", request.previews?.decoder)]
    for (name, decoder) in names where decoder == .tinyAutoencoder && tinyAutoencoder == nil {
      throw .invalidArgument(
        name: name,
        reason:
          "is the tiny autoencoder, but this pipeline has none (withTinyAutoencoder(at:), sd --taesd DIR)"
      )
    }
    if let every = request.previews?.every, every < 1 {
      throw .invalidArgument(name: "previews.every", reason: "must be at least 1, got \(every)")
    }
  }

  /// The preview due after `step` (1-based) of `request`, or nil when none is due.
  func preview(
    of latents: Tensor, afterStep step: Int, _ request: GenerationRequest,
    options: ComputeOptions
  ) throws(PipelineError) -> DecodedLatents? {
    guard let previews = request.previews, step % previews.every == 0 else { return nil }
    let decoder = previews.decoder ?? (tinyAutoencoder == nil ? .vae : .tinyAutoencoder)
    return try decode(latents, with: decoder, request, options: options)
  }

  /// Decodes `latents` (as the UNet sees them) with `decoder`: divided by its scaling factor as
  /// diffusers' pipelines do, the VAE tiled as `request.tiledDecodingAbove` says, the init
  /// image's pixels put back when the request keeps them.
  /// - Throws: `.cancelled`, `.nonFinite` for a NaN or infinite output, `.model` when a weights
  ///   file changed since loading.
  func decode(
    _ latents: Tensor, with decoder: LatentDecoder, _ request: GenerationRequest,
    options: ComputeOptions
  ) throws(PipelineError) -> DecodedLatents {
    let decoded: Tensor
    switch decoder {
    case .vae:
      try checkUnchanged(weightStores?.vae)
      let scaled = latents * (1 / vae.configuration.scalingFactor)
      let tiled =
        request.tiledDecodingAbove.map { latents.shape[2] > $0 || latents.shape[3] > $0 } ?? false
      decoded =
        tiled
        ? vae.decodeTiled(scaled, tile: 64, options: options) : vae.decode(scaled, options: options)
      weightStores?.vae.releaseResidentPages()
    case .tinyAutoencoder:
      guard let tinyAutoencoder else {
        throw .invalidArgument(name: "decoder", reason: "this pipeline has no tiny autoencoder")
      }
      try checkUnchanged(tinyAutoencoderWeights)
      let factor = tinyAutoencoder.configuration.scalingFactor
      decoded = tinyAutoencoder.decode(latents.map { $0 / factor }, options: options)
    }
    if options.isCancelled { throw .cancelled }
    guard decoded.scalars.allSatisfy(\.isFinite) else {
      throw .nonFinite(
        stage: "the decoded image",
        suspects: decoder == .vae ? "the VAE's weights" : "the tiny autoencoder's weights")
    }
    var image = RGBImage(decoded: decoded)
    if request.keepsUnmaskedPixels, let mask = request.mask, let initImage = request.initImage {
      image = RGBImage.composite(image, over: initImage, mask: mask)
    }
    return DecodedLatents(decoder: decoder, decoded: decoded, image: image)
  }
}

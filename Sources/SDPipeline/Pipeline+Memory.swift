// The memory check before a generation starts: the largest working set of its phases (the VAE
// encode of an init image, a UNet step over the guidance rows, the decode, tiled or not) against
// what the process can still allocate. A request that cannot fit is refused with one line, where
// it would otherwise trap in an allocation or push the machine into swap halfway through.

import SDModels
import SDTensor

extension StableDiffusionPipeline {
  /// Bytes of activations and buffers the generation of a `width` × `height` image with `rows`
  /// UNet rows holds at its peak, beyond the weights already loaded.
  func workingSetBytes(
    _ request: GenerationRequest, width: Int, height: Int, rows: Int
  ) -> Int {
    let factor = vaeScaleFactor
    let (h, w) = (height / factor, width / factor)
    let latents = rows * 4 * unet.configuration.inChannels * h * w
    let unetPhase = unet.workingSetBytes(rows: rows, height: h, width: w) + 3 * latents
    let encodePhase =
      request.initImage == nil ? 0 : vae.encodeWorkingSetBytes(height: height, width: width)
    let tiled = request.tiledDecodingAbove.map { h > $0 || w > $0 } ?? false
    // Tiled: one 64-latent tile at a time, plus the decoded tiles (overlapping by a quarter)
    // and their blend, about four images' worth of floats.
    let decodePhase =
      tiled
      ? vae.decodeWorkingSetBytes(height: 64 * factor, width: 64 * factor) + 4 * 12 * width * height
      : vae.decodeWorkingSetBytes(height: height, width: width)
    // The decoded floats, the 8-bit image and its PNG outlive the phases.
    let image = 12 * width * height + 2 * 3 * width * height
    return max(unetPhase, encodePhase, decodePhase) + image
  }

  /// Throws `PipelineError.insufficientMemory` when `needed` bytes exceed what the process can
  /// still allocate; does nothing where that cannot be read.
  func requireMemory(_ needed: Int, for what: @autoclosure () -> String) throws(PipelineError) {
    guard let available = AvailableMemory.current(), needed > available.bytes else { return }
    throw .insufficientMemory(
      what: what(), needed: needed, available: available.bytes, limit: available.limit)
  }
}

// Inpainting as diffusers' StableDiffusionInpaintPipeline does it (0.42,
// pipeline_stable_diffusion_inpaint.py): the mask binarized at 0.5 and downsampled to the latents
// by nearest neighbour; the image with the repainted region zeroed encoded as "masked-image
// latents". An inpainting UNet (9 input channels) takes the mask and those latents beside the
// latents at every step; with an ordinary UNet the kept region's latents are noised to the next
// timestep and put back after every step.

import Foundation
import SDTensor

/// Where an inpainting run repaints, per pixel: 1 repaints, 0 keeps. The model sees it
/// binarized at 0.5, as diffusers does; grey levels (and a blur) shape the final composite of
/// `GenerationRequest.keepsUnmaskedPixels`.
public struct InpaintingMask: Sendable, Equatable {
  /// Pixels per row (the init image's width).
  public let width: Int
  /// Rows (the init image's height).
  public let height: Int
  /// `width · height` values in [0, 1], row by row.
  public let values: [Float]

  /// - Precondition: `values.count == width · height`; values are clamped to [0, 1].
  public init(width: Int, height: Int, values: [Float]) {
    precondition(
      values.count == width * height, "mask \(width)x\(height) needs \(width * height) values")
    self.width = width
    self.height = height
    self.values = values.map { $0.isNaN ? 0 : Swift.min(1, Swift.max(0, $0)) }
  }

  /// The mask an image draws (white repaints): its luminance as PIL's "L" conversion, which
  /// diffusers applies to a mask image (ITU-R 601-2: (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16).
  public init(_ image: RGBImage) {
    var values = [Float](repeating: 0, count: image.width * image.height)
    for index in values.indices {
      let (r, g, b) = (
        UInt32(image.pixels[3 * index]), UInt32(image.pixels[3 * index + 1]),
        UInt32(image.pixels[3 * index + 2])
      )
      values[index] = Float((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) / 255
    }
    self.init(width: image.width, height: image.height, values: values)
  }

  /// The mask blurred by a Gaussian of standard deviation `radius` pixels (the web UIs' "mask
  /// blur"), the kernel cut at 3σ, edges repeated.
  public func blurred(radius: Int) -> InpaintingMask {
    guard radius > 0 else { return self }
    let sigma = Double(radius)
    let reach = Int((3 * sigma).rounded(.up))
    var kernel = (-reach...reach).map { Foundation.exp(-Double($0 * $0) / (2 * sigma * sigma)) }
    let total = kernel.reduce(0, +)
    kernel = kernel.map { $0 / total }
    func pass(_ input: [Float], along horizontal: Bool) -> [Float] {
      var output = [Float](repeating: 0, count: input.count)
      for y in 0..<height {
        for x in 0..<width {
          var sum = 0.0
          for (offset, weight) in zip(-reach...reach, kernel) {
            let (sx, sy) =
              horizontal
              ? (Swift.min(width - 1, Swift.max(0, x + offset)), y)
              : (x, Swift.min(height - 1, Swift.max(0, y + offset)))
            sum += weight * Double(input[sy * width + sx])
          }
          output[y * width + x] = Float(sum)
        }
      }
      return output
    }
    return InpaintingMask(
      width: width, height: height,
      values: pass(pass(values, along: true), along: false))
  }

  /// `[1, 1, height, width]`: 1 where the value is at least 0.5 (diffusers' `do_binarize`).
  var binarized: Tensor {
    Tensor(shape: [1, 1, height, width], scalars: values.map { $0 >= 0.5 ? 1 : 0 })
  }

  /// The binarized mask at latent resolution `[1, 1, height/f, width/f]`: torch's nearest
  /// interpolation takes pixel (f·i, f·j).
  func latentMask(factor: Int) -> Tensor {
    let (h, w) = (height / factor, width / factor)
    var scalars = [Float](repeating: 0, count: h * w)
    for i in 0..<h {
      for j in 0..<w {
        scalars[i * w + j] = values[(i * factor) * width + j * factor] >= 0.5 ? 1 : 0
      }
    }
    return Tensor(shape: [1, 1, h, w], scalars: scalars)
  }
}

/// What the denoising loop of an inpainting run needs besides the latents.
struct InpaintingConditions {
  /// `[1, 1, h, w]`, 1 = repaint.
  let latentMask: Tensor
  /// The masked image's latents `[1, 4, h, w]` (scaled), the inpainting UNet's extra input.
  let maskedImageLatents: Tensor
  /// The image's latents, put back outside the mask after every step (ordinary UNets; nil
  /// when the UNet takes the mask itself).
  let imageLatents: Tensor?
  /// The initial noise, with which the kept region is noised to each next timestep.
  let noise: Tensor

  /// The UNet input of `rows` rows: the scaled latents, then the mask and the masked-image
  /// latents on the channel axis (diffusers' order).
  func unetInput(_ scaled: Tensor, rows: Int) -> Tensor {
    concatenate(
      [
        scaled, concatenate(Array(repeating: latentMask, count: rows), axis: 0),
        concatenate(Array(repeating: maskedImageLatents, count: rows), axis: 0),
      ], axis: 1)
  }

  /// `latents` inside the mask, the image's latents at the noise level of `next` outside it.
  func blended(_ latents: Tensor, next: (Tensor, Tensor) -> Tensor?) -> Tensor {
    guard let imageLatents else { return latents }
    let known = next(imageLatents, noise) ?? imageLatents
    return latentMask.map { 1 - $0 } * known + latentMask * latents
  }
}

extension StableDiffusionPipeline {
  /// Whether the UNet is an inpainting one: it takes the latents, the mask and the masked
  /// image's latents (9 input channels for SD's 4 latent channels).
  var unetTakesMask: Bool {
    unet.configuration.inChannels == 2 * vae.configuration.latentChannels + 1
  }

  /// The inpainting rules of a request: a mask needs an init image of its size; an inpainting
  /// model needs both; a UNet of any other width is neither kind.
  func validateInpainting(_ request: GenerationRequest) throws(PipelineError) {
    let (unetChannels, latentChannels) = (
      unet.configuration.inChannels, vae.configuration.latentChannels
    )
    guard unetChannels == latentChannels || unetTakesMask else {
      throw .invalidArgument(
        name: "model",
        reason:
          "its UNet takes \(unetChannels) input channels; \(latentChannels) (an ordinary model) or \(2 * latentChannels + 1) (an inpainting model) are supported"
      )
    }
    guard let mask = request.mask else {
      guard !unetTakesMask else {
        throw .invalidArgument(
          name: "mask",
          reason:
            "this is an inpainting model (its UNet takes \(unetChannels) channels: latents, mask, masked image); give an init image and a mask"
        )
      }
      return
    }
    guard let image = request.initImage else {
      throw .invalidArgument(name: "mask", reason: "needs an init image to repaint")
    }
    guard mask.width == image.width, mask.height == image.height else {
      throw .invalidArgument(
        name: "mask",
        reason: "is \(mask.width)x\(mask.height), the init image is \(image.width)x\(image.height)")
    }
  }
}

extension RGBImage {
  /// `generated` inside the mask and `original` outside, blended by the mask's grey levels.
  public static func composite(_ generated: RGBImage, over original: RGBImage, mask: InpaintingMask)
    -> RGBImage
  {
    precondition(
      generated.width == original.width && generated.height == original.height
        && mask.width == original.width && mask.height == original.height)
    var pixels = original.pixels
    for index in 0..<(mask.width * mask.height) {
      let alpha = mask.values[index]
      for channel in 0..<3 {
        let offset = 3 * index + channel
        let value =
          alpha * Float(generated.pixels[offset]) + (1 - alpha) * Float(original.pixels[offset])
        pixels[offset] = UInt8(Swift.min(255, Swift.max(0, value.rounded())))
      }
    }
    return RGBImage(width: original.width, height: original.height, pixels: pixels)
  }
}

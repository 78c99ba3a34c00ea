// The web UIs' "only masked" inpainting (diffusers' `padding_mask_crop`): the region around the
// mask, widened to the generation's aspect ratio, is cut out, resized to the generation size,
// repainted there, and pasted back over the untouched image through the mask. Small repairs in
// large images so get the model's full resolution. Every step as diffusers' VaeImageProcessor
// takes it (get_crop_region, _resize_and_fill, _resize_and_crop, apply_overlay), with Pillow's
// resampling and 8-bit blending arithmetic.

import SDTensor

extension InpaintingMask {
  /// The mask as the 8-bit grayscale image diffusers reads.
  var levels: [UInt8] { values.map { UInt8(($0 * 255).rounded()) } }
}

/// A rectangle of pixels: `x0..<x1` × `y0..<y1`.
public struct PixelRegion: Sendable, Equatable {
  /// The corners: left, top (inclusive), right, bottom (exclusive).
  public var x0: Int, y0: Int, x1: Int, y1: Int
  /// Columns in the region.
  public var width: Int { x1 - x0 }
  /// Rows in the region.
  public var height: Int { y1 - y0 }
}

/// 8-bit pixels with `channels` samples each.
private struct Plane {
  var width: Int
  var height: Int
  var channels: Int
  var pixels: [UInt8]

  init(width: Int, height: Int, channels: Int, pixels: [UInt8]? = nil) {
    (self.width, self.height, self.channels) = (width, height, channels)
    self.pixels = pixels ?? [UInt8](repeating: 0, count: width * height * channels)
  }

  func resized(_ newWidth: Int, _ newHeight: Int, box: (Double, Double, Double, Double)? = nil)
    -> Plane
  {
    Plane(
      width: newWidth, height: newHeight, channels: channels,
      pixels: lanczosResized(
        pixels, channels: channels, width: width, height: height, to: newWidth, newHeight,
        box: box))
  }

  func cropped(_ region: PixelRegion) -> Plane {
    var out = Plane(width: region.width, height: region.height, channels: channels)
    out.paste(self, x: -region.x0, y: -region.y0)
    return out
  }

  /// Pillow's `paste(image, (x, y))`: the part that falls inside is copied.
  mutating func paste(_ image: Plane, x: Int, y: Int) {
    for row in max(0, y)..<min(height, y + image.height) {
      for column in max(0, x)..<min(width, x + image.width) {
        for channel in 0..<channels {
          pixels[(row * width + column) * channels + channel] =
            image.pixels[((row - y) * image.width + column - x) * channels + channel]
        }
      }
    }
  }

  /// diffusers' `_resize_and_fill`: fit inside width × height keeping the aspect ratio, centre,
  /// and fill the rest from the edge rows or columns (resized from a zero-extent box).
  func filled(_ width: Int, _ height: Int) -> Plane {
    let (ratio, sourceRatio) = (
      Double(width) / Double(height), Double(self.width) / Double(self.height)
    )
    let sourceWidth = ratio < sourceRatio ? width : self.width * height / self.height
    let sourceHeight = ratio >= sourceRatio ? height : self.height * width / self.width
    let resized = resized(sourceWidth, sourceHeight)
    var out = Plane(width: width, height: height, channels: channels)
    out.paste(resized, x: width / 2 - sourceWidth / 2, y: height / 2 - sourceHeight / 2)
    if ratio < sourceRatio {
      let fill = height / 2 - sourceHeight / 2
      if fill > 0 {
        let (w, h) = (Double(width), Double(resized.height))
        out.paste(resized.resized(width, fill, box: (0, 0, w, 0)), x: 0, y: 0)
        out.paste(resized.resized(width, fill, box: (0, h, w, h)), x: 0, y: fill + sourceHeight)
      }
    } else if ratio > sourceRatio {
      let fill = width / 2 - sourceWidth / 2
      if fill > 0 {
        let (w, h) = (Double(resized.width), Double(height))
        out.paste(resized.resized(fill, height, box: (0, 0, 0, h)), x: 0, y: 0)
        out.paste(resized.resized(fill, height, box: (w, 0, w, h)), x: fill + sourceWidth, y: 0)
      }
    }
    return out
  }

  /// diffusers' `_resize_and_crop`: cover width × height keeping the aspect ratio, centred.
  func coverCropped(_ width: Int, _ height: Int) -> Plane {
    let (ratio, sourceRatio) = (
      Double(width) / Double(height), Double(self.width) / Double(self.height)
    )
    let sourceWidth = ratio > sourceRatio ? width : self.width * height / self.height
    let sourceHeight = ratio <= sourceRatio ? height : self.height * width / self.width
    var out = Plane(width: width, height: height, channels: channels)
    out.paste(
      resized(sourceWidth, sourceHeight), x: width / 2 - sourceWidth / 2,
      y: height / 2 - sourceHeight / 2)
    return out
  }
}

extension RGBImage {
  fileprivate var plane: Plane { Plane(width: width, height: height, channels: 3, pixels: pixels) }
  fileprivate init(_ plane: Plane) {
    self.init(width: plane.width, height: plane.height, pixels: plane.pixels)
  }
}

enum OnlyMaskedInpainting {
  /// diffusers' `get_crop_region`: the box of the mask's non-zero pixels, widened by `padding`
  /// and then to the aspect ratio of width × height, kept inside the image.
  static func cropRegion(_ mask: InpaintingMask, width: Int, height: Int, padding: Int)
    -> PixelRegion
  {
    let levels = mask.levels
    let (w, h) = (mask.width, mask.height)
    let columnUsed = { (x: Int) in (0..<h).contains { levels[$0 * w + x] != 0 } }
    let rowUsed = { (y: Int) in (0..<w).contains { levels[y * w + $0] != 0 } }
    let left = (0..<w).first(where: columnUsed) ?? w
    let right = (0..<w).reversed().first(where: columnUsed).map { w - 1 - $0 } ?? w
    let top = (0..<h).first(where: rowUsed) ?? h
    let bottom = (0..<h).reversed().first(where: rowUsed).map { h - 1 - $0 } ?? h
    var (x1, y1) = (max(left - padding, 0), max(top - padding, 0))
    var (x2, y2) = (min(w - right + padding, w), min(h - bottom + padding, h))
    let cropRatio = Double(x2 - x1) / Double(y2 - y1)
    let processingRatio = Double(width) / Double(height)
    if cropRatio > processingRatio {
      let difference = Int(Double(x2 - x1) / processingRatio - Double(y2 - y1))
      y1 -= floorDivide(difference, 2)
      y2 += difference - floorDivide(difference, 2)
      if y2 >= h { (y1, y2) = (y1 - (y2 - h), h) }
      if y1 < 0 { (y1, y2) = (0, y2 - y1) }
      if y2 >= h { y2 = h }
    } else {
      let difference = Int(Double(y2 - y1) * processingRatio - Double(x2 - x1))
      x1 -= floorDivide(difference, 2)
      x2 += difference - floorDivide(difference, 2)
      if x2 >= w { (x1, x2) = (x1 - (x2 - w), w) }
      if x1 < 0 { (x1, x2) = (0, x2 - x1) }
      if x2 >= w { x2 = w }
    }
    return PixelRegion(x0: x1, y0: y1, x1: x2, y1: y2)
  }

  /// Python's `//`.
  private static func floorDivide(_ a: Int, _ b: Int) -> Int {
    (a >= 0) == (b > 0) || a % b == 0 ? a / b : a / b - 1
  }

  /// The crop of `image` and `mask` in `region`, each brought to width × height.
  static func crop(
    _ image: RGBImage, _ mask: InpaintingMask, region: PixelRegion, width: Int, height: Int
  ) -> (RGBImage, InpaintingMask) {
    let maskPlane = Plane(width: mask.width, height: mask.height, channels: 1, pixels: mask.levels)
      .cropped(region).filled(width, height)
    return (
      RGBImage(image.plane.cropped(region).filled(width, height)),
      InpaintingMask(width: width, height: height, values: maskPlane.pixels.map { Float($0) / 255 })
    )
  }

  /// diffusers' `apply_overlay`: `generated` resized into `region` of a black canvas, then the
  /// original image composited over it through the inverted mask, with Pillow's premultiplied
  /// paste and alpha-composite arithmetic.
  static func overlay(
    _ generated: RGBImage, onto original: RGBImage, mask: InpaintingMask, region: PixelRegion
  ) -> RGBImage {
    var canvas = Plane(width: original.width, height: original.height, channels: 3)
    canvas.paste(
      generated.plane.coverCropped(region.width, region.height), x: region.x0, y: region.y0)
    let levels = mask.levels
    func divide255(_ value: UInt32) -> UInt32 {
      let t = value + 128
      return ((t >> 8) + t) >> 8
    }
    var pixels = canvas.pixels
    for index in levels.indices {
      let inverse = 255 - UInt32(levels[index])
      // The original premultiplied by the inverted mask (paste onto transparent black), then
      // un-premultiplied (RGBa -> RGBA).
      let alpha = divide255(255 * inverse)
      guard alpha > 0 else { continue }
      for channel in 0..<3 {
        let offset = 3 * index + channel
        var source = divide255(UInt32(original.pixels[offset]) * inverse)
        if alpha != 255 { source = min(255, 255 * source / alpha) }
        // alpha_composite over an opaque destination, 7 extra bits of precision.
        let blend = 255 * (255 - alpha)
        let total = alpha * 255 + blend
        let weight = alpha * 255 * 255 * (1 << 7) / total
        let rest = 255 * (1 << 7) - weight
        let mixed = source * weight + UInt32(pixels[offset]) * rest + (0x80 << 7)
        pixels[offset] = UInt8(clamping: (((mixed >> 8) + mixed) >> 8) >> 7)
      }
    }
    return RGBImage(width: original.width, height: original.height, pixels: pixels)
  }
}

extension StableDiffusionPipeline {
  /// `request` in the "only masked" mode: the crop around its mask generated at the request's
  /// size (default: the model's, not the image's) and pasted back. The result's latents are the
  /// crop's; its image is the whole picture.
  func generateOnlyMasked(
    _ request: GenerationRequest, padding: Int, options: ComputeOptions,
    promptCache: PromptEncodingCache?, progress: ((GenerationProgress) -> Bool)?
  ) throws(PipelineError) -> GenerationResult {
    guard let mask = request.mask, let image = request.initImage else {
      throw .invalidArgument(
        name: "onlyMaskedPadding", reason: "needs an init image and a mask (inpainting)")
    }
    guard padding >= 0 else {
      throw .invalidArgument(name: "onlyMaskedPadding", reason: "must be >= 0, got \(padding)")
    }
    try validateInpainting(request)
    guard mask.levels.contains(where: { $0 != 0 }) else {
      throw .invalidArgument(name: "mask", reason: "is black everywhere: nothing to repaint")
    }
    let size = unet.configuration.sampleSize * vaeScaleFactor
    let (width, height) = (request.width ?? size, request.height ?? size)
    let region = OnlyMaskedInpainting.cropRegion(
      mask, width: width, height: height, padding: padding)
    var crop = request
    crop.onlyMaskedPadding = nil
    crop.keepsUnmaskedPixels = false
    (crop.width, crop.height) = (width, height)
    (crop.initImage, crop.mask) = OnlyMaskedInpainting.crop(
      image, mask, region: region, width: width, height: height)
    var result = try generate(crop, options: options, promptCache: promptCache, progress: progress)
    result.image = OnlyMaskedInpainting.overlay(
      result.image, onto: image, mask: mask, region: region)
    return result
  }
}

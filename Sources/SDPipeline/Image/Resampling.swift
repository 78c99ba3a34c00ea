// Pillow's Lanczos resampling (libImaging/Resample.c), bit for bit: what diffusers resizes images
// and masks with before they reach the models, so an image we resize is the image diffusers sees.
// Two separable passes (horizontal, then vertical), each with coefficients in 22-bit fixed point
// and 8-bit results between the passes, as Pillow computes them.

import Foundation

/// Pillow's fixed-point precision for 8-bit images: 32 − 8 − 2 bits.
private let precisionBits = 22

/// Pillow's Lanczos window (a = 3).
private func lanczos(_ x: Double) -> Double {
  func sinc(_ x: Double) -> Double {
    guard x != 0 else { return 1 }
    let px = x * Double.pi
    return sin(px) / px
  }
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0
}

/// For each output position: the first input index, how many inputs, and their fixed-point
/// weights (`precompute_coeffs` and `normalize_coeffs_8bpc`).
private func coefficients(inputSize: Int, from start: Double, to end: Double, outputSize: Int)
  -> [(first: Int, weights: [Int32])]
{
  let scale = (end - start) / Double(outputSize)
  let filterScale = max(scale, 1)
  let support = 3 * filterScale
  return (0..<outputSize).map { index in
    let center = start + (Double(index) + 0.5) * scale
    // C's (int) truncates toward zero.
    let first = max(Int(center - support + 0.5), 0)
    let last = min(Int(center + support + 0.5), inputSize)
    var weights = (first..<max(first, last)).map {
      lanczos((Double($0) - center + 0.5) / filterScale)
    }
    let total = weights.reduce(0, +)
    if total != 0 { weights = weights.map { $0 / total } }
    let fixed = weights.map { weight -> Int32 in
      let scaled = weight * Double(1 << precisionBits)
      return Int32(scaled < 0 ? scaled - 0.5 : scaled + 0.5)
    }
    return (first, fixed)
  }
}

/// One pass over `lines` lines of `count` samples, `stride` apart within a line and `lineStride`
/// between lines: each output sample the weighted sum of its window, rounded and clipped.
private func resamplePass(
  _ input: [UInt8], channels: Int, inputWidth: Int, inputHeight: Int, horizontal: Bool,
  coefficients: [(first: Int, weights: [Int32])]
) -> [UInt8] {
  let outputWidth = horizontal ? coefficients.count : inputWidth
  let outputHeight = horizontal ? inputHeight : coefficients.count
  var output = [UInt8](repeating: 0, count: outputWidth * outputHeight * channels)
  for y in 0..<outputHeight {
    for x in 0..<outputWidth {
      let (first, weights) = coefficients[horizontal ? x : y]
      for channel in 0..<channels {
        var sum: Int32 = 1 << (precisionBits - 1)
        for (offset, weight) in weights.enumerated() {
          let (sx, sy) = horizontal ? (first + offset, y) : (x, first + offset)
          sum &+= Int32(input[(sy * inputWidth + sx) * channels + channel]) &* weight
        }
        output[(y * outputWidth + x) * channels + channel] = UInt8(
          clamping: min(255, max(0, sum >> Int32(precisionBits))))
      }
    }
  }
  return output
}

/// `pixels` (`channels` samples per pixel) of `width`×`height` resized to `newWidth`×`newHeight`
/// from the region `box` (left, top, right, bottom; Pillow's `resize(size, LANCZOS, box)`).
func lanczosResized(
  _ pixels: [UInt8], channels: Int, width: Int, height: Int, to newWidth: Int, _ newHeight: Int,
  box: (Double, Double, Double, Double)? = nil
) -> [UInt8] {
  let box = box ?? (0, 0, Double(width), Double(height))
  let needsHorizontal = newWidth != width || box.0 != 0 || box.2 != Double(newWidth)
  let needsVertical = newHeight != height || box.1 != 0 || box.3 != Double(newHeight)
  var result = pixels
  var currentWidth = width
  if needsHorizontal {
    result = resamplePass(
      result, channels: channels, inputWidth: width, inputHeight: height, horizontal: true,
      coefficients: coefficients(
        inputSize: width, from: box.0, to: box.2, outputSize: newWidth))
    currentWidth = newWidth
  }
  if needsVertical {
    result = resamplePass(
      result, channels: channels, inputWidth: currentWidth, inputHeight: height,
      horizontal: false,
      coefficients: coefficients(
        inputSize: height, from: box.1, to: box.3, outputSize: newHeight))
  }
  return result
}

extension RGBImage {
  /// The image resized with Pillow's Lanczos filter, as `Image.resize((w, h), LANCZOS, box)`.
  public func resized(
    width newWidth: Int, height newHeight: Int, box: (Double, Double, Double, Double)? = nil
  ) -> RGBImage {
    RGBImage(
      width: newWidth, height: newHeight,
      pixels: lanczosResized(
        pixels, channels: 3, width: width, height: height, to: newWidth, newHeight, box: box))
  }
}

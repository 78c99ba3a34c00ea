// `Downsample2D` and `Upsample2D` (diffusers models/downsampling.py, upsampling.py) with their
// convolutions, as the UNet and the VAE use them.

import SDTensor

/// `Downsample2D` with a convolution: 3×3, stride 2. The UNet pads 1 on every side; the VAE
/// encoder pads only right and bottom (by 1) and convolves without padding.
public struct Downsample2D: Sendable {
  public let conv: Conv2D
  public let padsRightAndBottomOnly: Bool

  init(_ store: WeightStore, _ key: String, channels: Int, padsRightAndBottomOnly: Bool)
    throws(WeightError)
  {
    conv = try Conv2D(
      store, "\(key).conv", in: channels, out: channels, kernel: 3, stride: 2,
      padding: padsRightAndBottomOnly ? 0 : 1)
    self.padsRightAndBottomOnly = padsRightAndBottomOnly
  }

  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    conv(padsRightAndBottomOnly ? padRightAndBottom(x) : x, options: options)
  }
}

/// `Upsample2D` with a convolution: nearest-neighbour 2× (or to the skip connection's size),
/// then a 3×3 convolution.
public struct Upsample2D: Sendable {
  public let conv: Conv2D

  init(_ store: WeightStore, _ key: String, channels: Int) throws(WeightError) {
    conv = try Conv2D(store, "\(key).conv", in: channels, out: channels, kernel: 3, padding: 1)
  }

  /// `size`: the (height, width) to upsample to; twice the input when nil.
  public func callAsFunction(_ x: Tensor, size: (Int, Int)? = nil, options: ComputeOptions)
    -> Tensor
  {
    let (height, width) = size ?? (2 * x.shape[2], 2 * x.shape[3])
    return conv(
      upsampleNearest(x, height: height, width: width, options: options), options: options)
  }
}

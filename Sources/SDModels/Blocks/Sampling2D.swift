// `Downsample2D` and `Upsample2D` (diffusers models/downsampling.py, upsampling.py) with their
// convolutions, as the UNet and the VAE use them.

import SDTensor

/// `Downsample2D` with a convolution: 3×3, stride 2. The UNet pads 1 on every side; the VAE
/// encoder pads only right and bottom (by 1) and convolves without padding.
public struct Downsample2D: Sendable {
  /// `conv`: 3×3, stride 2, channels -> channels (padding 1, or 0 after the VAE's own padding).
  public let conv: Conv2D
  /// Whether the input gets one zero row and column at the bottom and right before the
  /// unpadded convolution (the VAE encoder's `padding=0` form) instead of padding 1 all round.
  public let padsRightAndBottomOnly: Bool

  init(_ store: WeightStore, _ key: String, channels: Int, padsRightAndBottomOnly: Bool)
    throws(WeightError)
  {
    conv = try Conv2D(
      store, "\(key).conv", in: channels, out: channels, kernel: 3, stride: 2,
      padding: padsRightAndBottomOnly ? 0 : 1)
    self.padsRightAndBottomOnly = padsRightAndBottomOnly
  }

  /// Halves the spatial size: `[n, c, h, w]` -> `[n, c, ⌈h/2⌉, ⌈w/2⌉]` with padding 1 (UNet),
  /// `[n, c, ⌊h/2⌋, ⌊w/2⌋]` with the right-and-bottom padding (VAE).
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    conv(padsRightAndBottomOnly ? padRightAndBottom(x) : x, options: options)
  }
}

/// `Upsample2D` with a convolution: nearest-neighbour 2× (or to the skip connection's size),
/// then a 3×3 convolution.
public struct Upsample2D: Sendable {
  /// `conv`: the 3×3, padding-1 convolution after the nearest-neighbour upsampling.
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

// nn.GroupNorm and nn.LayerNorm as layers. Each keeps its own epsilon because the reference
// differs by place (UNet resnets norm_eps 1e-5, transformer group norms and the VAE 1e-6).

import SDTensor

/// Group normalisation of `[n, c, ...]` (torch.nn.GroupNorm with affine parameters).
public struct GroupNorm: Sendable {
  /// Number of channel groups normalised separately (32 in SD); divides the channel count.
  public let groups: Int
  /// Added to the variance before the square root (the UNet's norm_eps, 1e-5, in its resnets and
  /// output norm; 1e-6 in its transformers and in the VAE).
  public let eps: Float
  /// Per-channel scale γ, `[channels]`.
  public let weight: Tensor
  /// Per-channel shift β, `[channels]`.
  public let bias: Tensor

  /// Reads `<key>.weight` and `<key>.bias` (`[channels]`).
  /// - Throws: `WeightError` when a tensor is missing or has another shape.
  public init(
    _ store: WeightStore, _ key: String, groups: Int, channels: Int, eps: Float
  ) throws(WeightError) {
    self.groups = groups
    self.eps = eps
    weight = try store.tensor("\(key).weight", shape: [channels])
    bias = try store.tensor("\(key).bias", shape: [channels])
  }

  /// Normalises `x`, then applies `activation` in the same pass when given.
  public func callAsFunction(
    _ x: Tensor, activation: Activation? = nil, options: ComputeOptions
  ) -> Tensor {
    groupNorm(
      x, groups: groups, weight: weight, bias: bias, eps: eps, activation: activation,
      options: options)
  }
}

/// Layer normalisation over the last axis (torch.nn.LayerNorm with affine parameters).
public struct LayerNorm: Sendable {
  /// Added to the variance before the square root (1e-5 in the UNet's transformer blocks; CLIP's
  /// `layer_norm_eps`).
  public let eps: Float
  /// Scale γ over the last axis, `[channels]`.
  public let weight: Tensor
  /// Shift β over the last axis, `[channels]`.
  public let bias: Tensor

  /// Reads `<key>.weight` and `<key>.bias` (`[channels]`).
  /// - Throws: `WeightError` when a tensor is missing or has another shape.
  public init(_ store: WeightStore, _ key: String, channels: Int, eps: Float) throws(WeightError) {
    self.eps = eps
    weight = try store.tensor("\(key).weight", shape: [channels])
    bias = try store.tensor("\(key).bias", shape: [channels])
  }

  /// Normalises `x` `[..., channels]` over its last axis, then scales and shifts; same shape.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    layerNorm(x, weight: weight, bias: bias, eps: eps, options: options)
  }
}

// nn.Linear as a layer that holds its checkpoint tensors. Its weight may be kept in half
// precision (`WeightStore.keepsHalfPrecision`) and is then widened on every call; Float32
// weights are used in place.

import SDTensor

/// y = x·Wᵀ + b over the last axis: `[..., inFeatures]` -> `[..., outFeatures]` (torch.nn.Linear).
public struct Linear: Sendable {
  /// `[outFeatures, inFeatures]`, as stored in the checkpoint (Float32 or half precision).
  public let weight: Weight
  /// `[outFeatures]`.
  public let bias: Tensor?

  /// Reads `<key>.weight` (and `<key>.bias`) from `store`.
  /// - Throws: `WeightError` when a tensor is missing or has another shape.
  public init(
    _ store: WeightStore, _ key: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true
  ) throws(WeightError) {
    weight = try store.weight("\(key).weight", shape: [outFeatures, inFeatures])
    self.bias = bias ? try store.tensor("\(key).bias", shape: [outFeatures]) : nil
  }

  /// A layer of these tensors (`weight` `[out, in]`, `bias` `[out]` or nil; `linear` checks
  /// their shapes at every call).
  init(weight: Weight, bias: Tensor?) {
    (self.weight, self.bias) = (weight, bias)
  }

  /// Width of the output's last axis, from the weight's first extent.
  public var outFeatures: Int { weight.shape[0] }

  /// x·Wᵀ + b: `[..., inFeatures]` -> `[..., outFeatures]`.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    linear(x, weight: weight, bias: bias, options: options)
  }
}

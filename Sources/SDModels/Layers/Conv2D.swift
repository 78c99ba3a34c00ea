// nn.Conv2d as a layer that holds its checkpoint tensors (half-precision weights are widened on
// every call, Float32 ones used in place, as for Linear).

import SDTensor

/// 2-D convolution, `[n, in, h, w]` -> `[n, out, h', w']` (torch.nn.Conv2d with square kernel,
/// equal padding on all sides).
public struct Conv2D: Sendable {
  /// `[out, in, kernel, kernel]` (Float32 or half precision).
  public let weight: Weight
  /// `[out]`.
  public let bias: Tensor?
  /// Step of the kernel in both directions (2 in the downsamplers).
  public let stride: Int
  /// Zero padding added on each of the four sides.
  public let padding: Int

  /// Reads `<key>.weight` and `<key>.bias` from `store`.
  /// - Throws: `WeightError` when a tensor is missing or has another shape.
  public init(
    _ store: WeightStore, _ key: String, in inChannels: Int, out outChannels: Int, kernel: Int,
    stride: Int = 1, padding: Int = 0, bias: Bool = true
  ) throws(WeightError) {
    weight = try store.weight("\(key).weight", shape: [outChannels, inChannels, kernel, kernel])
    self.bias = bias ? try store.tensor("\(key).bias", shape: [outChannels]) : nil
    self.stride = stride
    self.padding = padding
  }

  /// Channels of the output, from the weight's first extent.
  public var outChannels: Int { weight.shape[0] }

  /// Convolves `x` `[n, in, h, w]` -> `[n, out, (h + 2·padding − kernel) / stride + 1, ...]`.
  /// (Repeated images are not skipped here as self-attention skips repeated rows: for the first
  /// resnet's two convolutions, ~0.035 s a step, `sd generate` on fp32 files peaked at 3.77
  /// instead of 3.73 GB.)
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, options: options)
  }
}

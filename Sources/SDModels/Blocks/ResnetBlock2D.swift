// `ResnetBlock2D` (diffusers models/resnet.py), the residual block of the UNet and the VAE.

import SDTensor

/// `ResnetBlock2D`: norm → SiLU → conv, plus the time embedding, norm → SiLU → conv, plus the
/// (1×1-projected when channels change) input. `[n, in, h, w]` -> `[n, out, h, w]`.
public struct ResnetBlock2D: Sendable {
  /// `norm1`: group norm of the input (SiLU follows), in channels.
  public let norm1: GroupNorm
  /// `conv1`: 3×3, in -> out channels.
  public let conv1: Conv2D
  /// Absent in the VAE, whose resnets take no time embedding.
  public let timeEmbProj: Linear?
  /// `norm2`: group norm after the time embedding is added (SiLU follows), out channels.
  public let norm2: GroupNorm
  /// `conv2`: 3×3, out -> out channels.
  public let conv2: Conv2D
  /// `conv_shortcut`: 1×1 projection of the input when in ≠ out channels; nil otherwise.
  public let convShortcut: Conv2D?

  /// Reads the block under `key` (`down_blocks.0.resnets.1`); `timeEmbeddingChannels` is nil for
  /// the VAE's resnets, which take no time embedding.
  init(
    _ store: WeightStore, _ key: String, in inChannels: Int, out outChannels: Int,
    timeEmbeddingChannels: Int?, groups: Int, eps: Float
  ) throws(WeightError) {
    norm1 = try GroupNorm(store, "\(key).norm1", groups: groups, channels: inChannels, eps: eps)
    conv1 = try Conv2D(
      store, "\(key).conv1", in: inChannels, out: outChannels, kernel: 3, padding: 1)
    timeEmbProj = try timeEmbeddingChannels.map { channels throws(WeightError) in
      try Linear(store, "\(key).time_emb_proj", in: channels, out: outChannels)
    }
    norm2 = try GroupNorm(store, "\(key).norm2", groups: groups, channels: outChannels, eps: eps)
    conv2 = try Conv2D(
      store, "\(key).conv2", in: outChannels, out: outChannels, kernel: 3, padding: 1)
    convShortcut =
      inChannels == outChannels
      ? nil : try Conv2D(store, "\(key).conv_shortcut", in: inChannels, out: outChannels, kernel: 1)
  }

  /// `timeEmbedding`: `[n, temb]`, already the UNet's embedding; SiLU is applied here as in
  /// diffusers (`nonlinearity(temb)` before `time_emb_proj`).
  public func callAsFunction(_ x: Tensor, timeEmbedding: Tensor?, options: ComputeOptions) -> Tensor
  {
    var hidden = conv1(norm1(x, activation: .silu, options: options), options: options)
    if let timeEmbProj, let timeEmbedding {
      let projected = timeEmbProj(
        activate(timeEmbedding, .silu, options: options), options: options)
      hidden = hidden + projected.reshaped([projected.shape[0], projected.shape[1], 1, 1])
    }
    hidden = conv2(norm2(hidden, activation: .silu, options: options), options: options)
    var residual = convShortcut.map { $0(x, options: options) } ?? x
    residual.add(hidden)
    return residual
  }

  /// The `<key>.resnets.<j>` of a block, resnet j taking `inputs[j]` channels to `out`: the one
  /// loop every UNet and VAE block builds its resnets with.
  static func stack(
    _ store: WeightStore, _ key: String, inputs: [Int], out outChannels: Int,
    timeEmbeddingChannels: Int?, groups: Int, eps: Float
  ) throws(WeightError) -> [ResnetBlock2D] {
    var resnets: [ResnetBlock2D] = []
    for (index, inChannels) in inputs.enumerated() {
      resnets.append(
        try ResnetBlock2D(
          store, "\(key).resnets.\(index)", in: inChannels, out: outChannels,
          timeEmbeddingChannels: timeEmbeddingChannels, groups: groups, eps: eps))
    }
    return resnets
  }
}

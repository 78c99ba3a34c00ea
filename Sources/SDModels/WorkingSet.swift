// Upper estimates of the activation memory a forward pass holds at its peak, from the model's
// configuration and the input size, so that a request too large for the machine is refused
// before it starts instead of trapping in an allocation halfway through (Swift arrays cannot
// report a failed allocation). The factors count the tensors alive at once in our kernels, and
// were checked against the peak resident memory of real runs (tiny fixtures at 256–2048 px, the
// full-size SD 1.5 shapes at 512 and 1024 px): the estimates are 1.0–1.4× what was measured.

extension UNet2DConditionModel {
  /// Bytes of activations one UNet call over `rows` batch rows of `height` × `width` latents
  /// holds at its peak: the skip connections of the down path, plus the largest level's working
  /// tensors (a transformer block's feed-forward holds 8 + 4 channel-widths of GEGLU beside its
  /// input, norm and residual: 16 channel-widths in all).
  public func workingSetBytes(rows: Int, height: Int, width: Int) -> Int {
    let config = configuration
    var skips = config.blockOutChannels[0] * height * width
    var largest = 0
    var (h, w) = (height, width)
    for (level, channels) in config.blockOutChannels.enumerated() {
      let last = level == config.blockOutChannels.count - 1
      skips += config.layersPerBlock * channels * h * w
      largest = max(largest, 16 * channels * h * w)
      if !last {
        (h, w) = ((h + 1) / 2, (w + 1) / 2)
        skips += channels * h * w
      }
    }
    return rows * 4 * (skips + largest)
  }
}

extension AutoencoderKL {
  /// Bytes of activations `decode` holds at its peak for an image of `height` × `width` pixels:
  /// at full resolution the last up block's input (the upsampled channels of the block before
  /// it) and its output channels, about three copies of each (norm, convolution, Winograd tiles).
  public func decodeWorkingSetBytes(height: Int, width: Int) -> Int {
    let channels = configuration.blockOutChannels
    let input = channels.count > 1 ? channels[1] : channels[0]
    return 4 * 3 * (input + channels[0]) * height * width
  }

  /// Bytes of activations `encode` holds at its peak for an image of `height` × `width` pixels:
  /// five tensors of the first block's channels at full resolution.
  public func encodeWorkingSetBytes(height: Int, width: Int) -> Int {
    4 * 5 * configuration.blockOutChannels[0] * height * width
  }
}

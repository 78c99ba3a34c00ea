// Group norm (torch.nn.GroupNorm) and layer norm (torch.nn.LayerNorm over the last axis).
// Statistics are accumulated in Double, one group or row per parallel item, so the result does
// not depend on the thread count. Legend: n batch, c channels, g groups, s spatial size.

/// Group normalisation of `[n, c, ...]` with per-channel affine `weight`/`bias` `[c]`, optionally
/// followed by an activation fused into the same pass (the UNet's norm → SiLU pairs).
public func groupNorm(
  _ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float,
  activation: Activation? = nil, options: ComputeOptions
) -> Tensor {
  let (n, c) = (x.shape[0], x.shape[1])
  precondition(c % groups == 0, "groupNorm: \(c) channels do not split into \(groups) groups")
  precondition(
    weight.shape == [c] && bias.shape == [c], "groupNorm affine \(weight.shape) for \(c) channels")
  let s = x.count / Swift.max(1, n * c)
  let channelsPerGroup = c / groups
  let groupSize = channelsPerGroup * s
  return Tensor(shape: x.shape) { out in
    x.scalars.withUnsafeBufferPointer { src in
      weight.scalars.withUnsafeBufferPointer { gamma in
        bias.scalars.withUnsafeBufferPointer { beta in
          guard let sb = src.baseAddress, let db = out.baseAddress, let gb = gamma.baseAddress,
            let bb = beta.baseAddress
          else { return }
          let (source, destination) = (SharedPointer(sb), SharedMutablePointer(db))
          let (scale, shift) = (SharedPointer(gb), SharedPointer(bb))
          // One (item, group) per iteration; groups are disjoint slices of the output.
          parallelFor(n * groups, grain: 1, options: options) { range in
            for index in range {
              let base = index * groupSize
              let (mean, variance) = meanAndVariance(source.base + base, count: groupSize)
              let inverse = Float(1 / (variance + Double(eps)).squareRoot())
              let firstChannel = (index % groups) * channelsPerGroup
              for channelInGroup in 0..<channelsPerGroup {
                let channel = firstChannel + channelInGroup
                let a = scale.base[channel] * inverse
                let b = shift.base[channel] - Float(mean) * a
                let offset = base + channelInGroup * s
                let input = source.base + offset
                let output = destination.base + offset
                for i in 0..<s { output[i] = input[i] * a + b }
                activation?.apply(output, output, count: s)
              }
            }
          }
        }
      }
    }
  }
}

/// Layer normalisation over the last axis with affine `weight`/`bias` of that axis' size.
public func layerNorm(
  _ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, options: ComputeOptions
) -> Tensor {
  let width = x.shape[x.rank - 1]
  precondition(
    weight.shape == [width] && bias.shape == [width],
    "layerNorm affine \(weight.shape) for \(x.shape)")
  let rows = x.count / Swift.max(1, width)
  return Tensor(shape: x.shape) { out in
    x.scalars.withUnsafeBufferPointer { src in
      weight.scalars.withUnsafeBufferPointer { gamma in
        bias.scalars.withUnsafeBufferPointer { beta in
          guard let sb = src.baseAddress, let db = out.baseAddress, let gb = gamma.baseAddress,
            let bb = beta.baseAddress
          else { return }
          let (source, destination) = (SharedPointer(sb), SharedMutablePointer(db))
          let (scale, shift) = (SharedPointer(gb), SharedPointer(bb))
          // One row per item; rows are disjoint.
          parallelFor(rows, grain: Swift.max(1, 4096 / Swift.max(1, width)), options: options) {
            range in
            for row in range {
              let input = source.base + row * width
              let output = destination.base + row * width
              let (mean, variance) = meanAndVariance(input, count: width)
              let inverse = Float(1 / (variance + Double(eps)).squareRoot())
              let m = Float(mean)
              for i in 0..<width {
                output[i] = (input[i] - m) * inverse * scale.base[i] + shift.base[i]
              }
            }
          }
        }
      }
    }
  }
}

/// Mean and biased variance of `count` floats, two passes accumulated in Double over four
/// fixed lanes (a fixed order, so the result does not depend on the thread count).
@inline(__always)
func meanAndVariance(_ p: UnsafePointer<Float>, count: Int) -> (Double, Double) {
  guard count > 0 else { return (0, 0) }
  var (s0, s1, s2, s3) = (0.0, 0.0, 0.0, 0.0)
  var i = 0
  while i + 4 <= count {
    s0 += Double(p[i])
    s1 += Double(p[i + 1])
    s2 += Double(p[i + 2])
    s3 += Double(p[i + 3])
    i += 4
  }
  while i < count { s0 += Double(p[i]); i += 1 }
  let mean = (s0 + s1 + s2 + s3) / Double(count)
  var (q0, q1, q2, q3) = (0.0, 0.0, 0.0, 0.0)
  i = 0
  while i + 4 <= count {
    let (d0, d1, d2, d3) = (
      Double(p[i]) - mean, Double(p[i + 1]) - mean, Double(p[i + 2]) - mean, Double(p[i + 3]) - mean
    )
    q0 += d0 * d0
    q1 += d1 * d1
    q2 += d2 * d2
    q3 += d3 * d3
    i += 4
  }
  while i < count { let d = Double(p[i]) - mean; q0 += d * d; i += 1 }
  return (mean, (q0 + q1 + q2 + q3) / Double(count))
}

/// Plain-loop reference for `groupNorm` without activation (tests compare the two).
public func referenceGroupNorm(
  _ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float
) -> Tensor {
  let (n, c) = (x.shape[0], x.shape[1])
  let s = x.count / (n * c)
  let size = c / groups * s
  var out = x.scalars
  for index in 0..<(n * groups) {
    let slice = x.scalars[(index * size)..<((index + 1) * size)].map(Double.init)
    let mean = slice.reduce(0, +) / Double(size)
    let variance = slice.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(size)
    for j in 0..<size {
      let channel = (index % groups) * (c / groups) + j / s
      let normalized = (slice[j] - mean) / (variance + Double(eps)).squareRoot()
      out[index * size + j] = Float(
        normalized * Double(weight.scalars[channel]) + Double(bias.scalars[channel]))
    }
  }
  return Tensor(shape: x.shape, scalars: out)
}

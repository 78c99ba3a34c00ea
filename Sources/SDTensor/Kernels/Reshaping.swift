// Data movement without arithmetic: nearest-neighbour 2× upsampling, concatenation and splitting
// along an axis.

/// Nearest-neighbour upsampling by 2 of `[n, c, h, w]` -> `[n, c, 2h, 2w]`
/// (torch.nn.functional.interpolate(scale_factor=2.0, mode="nearest")).
public func upsampleNearest2x(_ x: Tensor, options: ComputeOptions) -> Tensor {
  precondition(x.rank == 4, "upsampleNearest2x needs NCHW, got \(x.shape)")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  return Tensor(shape: [n, c, 2 * h, 2 * w]) { out in
    x.scalars.withUnsafeBufferPointer { src in
      guard let s = src.baseAddress, let d = out.baseAddress else { return }
      let (source, destination) = (SharedPointer(s), SharedMutablePointer(d))
      // One input row -> two output rows, disjoint per iteration.
      parallelFor(n * c * h, grain: Swift.max(1, elementwiseGrain / Swift.max(1, 4 * w)), options: options) {
        range in
        for row in range {
          let input = source.base + row * w
          let output = destination.base + row * 4 * w
          for i in 0..<w {
            output[2 * i] = input[i]
            output[2 * i + 1] = input[i]
          }
          (output + 2 * w).update(from: output, count: 2 * w)
        }
      }
    }
  }
}

/// Concatenates tensors that agree on every axis but `axis`.
public func concatenate(_ parts: [Tensor], axis: Int) -> Tensor {
  guard let first = parts.first else { return Tensor(zeros: [0]) }
  let outer = first.shape[..<axis].reduce(1, *)
  let inner = first.shape[(axis + 1)...].reduce(1, *)
  for part in parts {
    precondition(
      part.rank == first.rank && part.shape[..<axis] == first.shape[..<axis]
        && part.shape[(axis + 1)...] == first.shape[(axis + 1)...],
      "concatenate along \(axis): \(part.shape) does not fit \(first.shape)")
  }
  var shape = first.shape
  shape[axis] = parts.reduce(0) { $0 + $1.shape[axis] }
  let outRow = shape[axis] * inner
  return Tensor(shape: shape) { out in
    guard let d = out.baseAddress else { return }
    var offset = 0
    for part in parts {
      let run = part.shape[axis] * inner
      part.scalars.withUnsafeBufferPointer { src in
        guard let s = src.baseAddress else { return }
        for o in 0..<outer { (d + o * outRow + offset).update(from: s + o * run, count: run) }
      }
      offset += run
    }
  }
}

/// Splits `x` along `axis` into pieces of the given sizes (which must add up to that extent).
public func split(_ x: Tensor, sizes: [Int], axis: Int) -> [Tensor] {
  precondition(sizes.reduce(0, +) == x.shape[axis], "split \(x.shape) along \(axis) into \(sizes)")
  let outer = x.shape[..<axis].reduce(1, *)
  let inner = x.shape[(axis + 1)...].reduce(1, *)
  let inRow = x.shape[axis] * inner
  var start = 0
  return x.scalars.withUnsafeBufferPointer { src in
    sizes.map { size in
      var shape = x.shape
      shape[axis] = size
      let run = size * inner
      let offset = start
      start += run
      return Tensor(shape: shape) { out in
        guard let s = src.baseAddress, let d = out.baseAddress else { return }
        for o in 0..<outer { (d + o * run).update(from: s + o * inRow + offset, count: run) }
      }
    }
  }
}

/// Splits `x` into `count` equal pieces along `axis` (torch.chunk with an even split).
public func chunk(_ x: Tensor, _ count: Int, axis: Int) -> [Tensor] {
  precondition(x.shape[axis] % count == 0, "chunk \(x.shape) along \(axis) into \(count)")
  return split(x, sizes: Array(repeating: x.shape[axis] / count, count: count), axis: axis)
}

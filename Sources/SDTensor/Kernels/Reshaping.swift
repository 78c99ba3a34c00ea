// Data movement without arithmetic: nearest-neighbour upsampling, concatenation and splitting
// along an axis.

/// Nearest-neighbour resize of `[n, c, h, w]` to `[n, c, height, width]`
/// (torch.nn.functional.interpolate(mode="nearest"): output i reads input ⌊i · in/out⌋).
/// The UNet upsamples 2× and passes the skip connection's size when the latent is odd-sized.
public func upsampleNearest(
  _ x: Tensor, height: Int, width: Int, options: ComputeOptions
) -> Tensor {
  precondition(x.rank == 4, "upsampleNearest needs NCHW, got \(x.shape)")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  let rowScale = Float(h) / Float(height)
  let columnScale = Float(w) / Float(width)
  let sourceColumn = (0..<width).map {
    Swift.min(w - 1, Int((Float($0) * columnScale).rounded(.down)))
  }
  let sourceRow = (0..<height).map { Swift.min(h - 1, Int((Float($0) * rowScale).rounded(.down))) }
  return Tensor(shape: [n, c, height, width]) { out in
    x.scalars.withUnsafeBufferPointer { src in
      guard let s = src.baseAddress, let d = out.baseAddress else { return }
      let (source, destination) = (SharedPointer(s), SharedMutablePointer(d))
      // One output plane per iteration; planes are disjoint.
      parallelFor(
        n * c, grain: Swift.max(1, elementwiseGrain / Swift.max(1, height * width)),
        options: options
      ) {
        range in
        for plane in range {
          let input = source.base + plane * h * w
          let output = destination.base + plane * height * width
          for y in 0..<height {
            let line = output + y * width
            if y > 0 && sourceRow[y] == sourceRow[y - 1] {
              line.update(from: line - width, count: width)
              continue
            }
            let inputRow = input + sourceRow[y] * w
            for x in 0..<width { line[x] = inputRow[sourceColumn[x]] }
          }
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

/// Zero-pads `[n, c, h, w]` by one row at the bottom and one column at the right
/// (F.pad(x, (0, 1, 0, 1)), the asymmetric padding of the VAE encoder's downsampler).
public func padRightAndBottom(_ x: Tensor) -> Tensor {
  precondition(x.rank == 4, "padRightAndBottom needs NCHW, got \(x.shape)")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  var out = [Float](repeating: 0, count: n * c * (h + 1) * (w + 1))
  x.scalars.withUnsafeBufferPointer { src in
    out.withUnsafeMutableBufferPointer { dst in
      guard let s = src.baseAddress, let d = dst.baseAddress else { return }
      for plane in 0..<(n * c) {
        for y in 0..<h {
          (d + (plane * (h + 1) + y) * (w + 1)).update(from: s + (plane * h + y) * w, count: w)
        }
      }
    }
  }
  return Tensor(shape: [n, c, h + 1, w + 1], scalars: out)
}

// Batches whose rows repeat. Classifier-free guidance runs the negative and the positive prompt as
// two rows of one UNet batch, and until the first cross-attention reads the text states those rows
// are the same latent at the same timestep, bit for bit: SD 1.5's first self-attention over 4096
// tokens (0.29 s of a step at batch 2) and its projections would be computed twice. A row-wise
// layer computes such rows once.

import Foundation

/// `body(x)` for a row-wise `body`, computing each distinct row of `x` (along its first axis) only
/// once: rows equal bit for bit to an earlier row are left out of the batch `body` sees, and their
/// output rows are copies of that row's output.
///
/// Row-wise means that output row i depends on input row i alone and is computed the same way
/// whatever the batch it is in: true of every layer here (each GEMM output element is one fixed
/// sequence of FMAs, attention and convolutions work per item), so the result is the same bits as
/// `body(x)`. Rows that differ are found at their first differing value, so a batch without
/// repeats costs a few compares.
public func onDistinctRows(_ x: Tensor, _ body: (Tensor) -> Tensor) -> Tensor {
  let rows = x.rank > 0 ? x.shape[0] : 0
  let width = rows > 0 ? x.count / rows : 0
  guard rows > 1 && width > 0 else { return body(x) }
  // firstEqual[i]: the first row equal to row i (i itself when none before it is).
  let firstEqual: [Int] = x.scalars.withUnsafeBytes { raw in
    guard let base = raw.baseAddress else { return Array(0..<rows) }
    let bytes = width * MemoryLayout<Float>.size
    var firstEqual = Array(0..<rows)
    for row in 1..<rows {
      firstEqual[row] =
        (0..<row).first { earlier in
          firstEqual[earlier] == earlier
            && memcmp(base + row * bytes, base + earlier * bytes, bytes) == 0
        } ?? row
    }
    return firstEqual
  }
  let distinct = (0..<rows).filter { firstEqual[$0] == $0 }
  guard distinct.count < rows else { return body(x) }

  let computed = body(gatherRows(x, distinct))
  precondition(
    computed.rank > 0 && computed.shape[0] == distinct.count,
    "onDistinctRows: the body returned \(computed.shape) for \(distinct.count) rows")
  // Where each distinct row's output is in `computed`.
  var position = [Int](repeating: 0, count: rows)
  for (index, row) in distinct.enumerated() { position[row] = index }
  return gatherRows(computed, (0..<rows).map { position[firstEqual[$0]] })
}

/// The rows `indices` of `x` (along its first axis), in that order.
private func gatherRows(_ x: Tensor, _ indices: [Int]) -> Tensor {
  let width = x.count / x.shape[0]
  return Tensor(shape: [indices.count] + x.shape.dropFirst()) { out in
    x.scalars.withUnsafeBufferPointer { source in
      guard let s = source.baseAddress, let d = out.baseAddress else { return }
      for (index, row) in indices.enumerated() {
        (d + index * width).update(from: s + row * width, count: width)
      }
    }
  }
}

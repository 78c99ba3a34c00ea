// Numerically stable softmax over the last axis (max subtracted before exp).

/// Softmax over the last axis.
public func softmax(_ x: Tensor, options: ComputeOptions) -> Tensor {
  let width = x.shape[x.rank - 1]
  let rows = x.count / Swift.max(1, width)
  var out = x
  out.scalars.withUnsafeMutableBufferPointer { buffer in
    guard let base = buffer.baseAddress else { return }
    softmaxRows(base, rows: rows, width: width, options: options)
  }
  return out
}

/// In-place softmax of `rows` rows of `width` floats. With `causalOffset` = q, row r keeps only
/// its first `q + r + 1` entries (a query at position q + r attends to keys 0...q + r) and the
/// rest become exactly 0. With `inverseSums`, rows are left unnormalised and 1/Σ of row r is
/// written to `inverseSums[r]` for the caller to apply later.
func softmaxRows(
  _ base: UnsafeMutablePointer<Float>, rows: Int, width: Int, causalOffset: Int? = nil,
  scale: Float = 1, inverseSums: UnsafeMutablePointer<Float>? = nil, options: ComputeOptions
) {
  let sums = inverseSums.map(SharedMutablePointer.init)
  let data = SharedMutablePointer(base)
  // Each row is owned by one iteration.
  parallelFor(rows, grain: Swift.max(1, elementwiseGrain / Swift.max(1, width)), options: options) {
    range in
    for row in range {
      let p = data.base + row * width
      let valid = causalOffset.map { Swift.min(width, $0 + row + 1) } ?? width
      // exp(scale·(x − max)): the attention scale is folded in here so QKᵀ needs no extra pass.
      let shift = maximum(p, count: valid)
      for i in 0..<valid { p[i] = fastExp((p[i] - shift) * scale) }
      let inverse = 1 / sum(p, count: valid)
      if let sums {
        sums.base[row] = inverse
      } else {
        for i in 0..<valid { p[i] *= inverse }
      }
      (p + valid).update(repeating: 0, count: width - valid)
    }
  }
}

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
/// rest become exactly 0.
func softmaxRows(
  _ base: UnsafeMutablePointer<Float>, rows: Int, width: Int, causalOffset: Int? = nil,
  scale: Float = 1, options: ComputeOptions
) {
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
      for i in 0..<valid { p[i] *= inverse }
      (p + valid).update(repeating: 0, count: width - valid)
    }
  }
}

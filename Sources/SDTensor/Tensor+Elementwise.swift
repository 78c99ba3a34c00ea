// Element-wise arithmetic with NumPy/PyTorch broadcasting (shapes aligned on the right, extent-1
// axes stretched).

extension Tensor {
  /// a + b, broadcasting.
  public static func + (a: Tensor, b: Tensor) -> Tensor { broadcast(a, b) { $0 + $1 } }
  /// a − b, broadcasting.
  public static func - (a: Tensor, b: Tensor) -> Tensor { broadcast(a, b) { $0 - $1 } }
  /// a · b element by element, broadcasting.
  public static func * (a: Tensor, b: Tensor) -> Tensor { broadcast(a, b) { $0 * $1 } }
  /// a / b element by element, broadcasting.
  public static func / (a: Tensor, b: Tensor) -> Tensor { broadcast(a, b) { $0 / $1 } }

  /// Every element times `s`.
  public static func * (a: Tensor, s: Float) -> Tensor { a.map { $0 * s } }
  /// Every element times `s`.
  public static func * (s: Float, a: Tensor) -> Tensor { a.map { $0 * s } }
  /// Every element plus `s`.
  public static func + (a: Tensor, s: Float) -> Tensor { a.map { $0 + s } }
  /// Every element minus `s`.
  public static func - (a: Tensor, s: Float) -> Tensor { a.map { $0 - s } }

  /// Applies `transform` to every element.
  @inlinable
  public func map(_ transform: (Float) -> Float) -> Tensor {
    Tensor(shape: shape, scalars: scalars.map(transform))
  }

  /// Adds `other` (same shape) into `self` in place; the residual connections use it to avoid a
  /// third buffer.
  public mutating func add(_ other: Tensor) {
    precondition(shape == other.shape, "add: \(shape) vs \(other.shape)")
    scalars.withUnsafeMutableBufferPointer { dst in
      other.scalars.withUnsafeBufferPointer { src in
        for i in 0..<dst.count { dst[i] += src[i] }
      }
    }
  }

  /// The shape two operands broadcast to, or nil when they cannot.
  public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let rank = Swift.max(a.count, b.count)
    var shape = [Int](repeating: 1, count: rank)
    for axis in 0..<rank {
      let x = axis < rank - a.count ? 1 : a[axis - (rank - a.count)]
      let y = axis < rank - b.count ? 1 : b[axis - (rank - b.count)]
      guard x == y || x == 1 || y == 1 else { return nil }
      shape[axis] = x == 1 ? y : x
    }
    return shape
  }

  private static func broadcast(_ a: Tensor, _ b: Tensor, _ op: (Float, Float) -> Float) -> Tensor {
    if a.shape == b.shape {
      return Tensor(shape: a.shape) { out in
        for i in 0..<out.count { out[i] = op(a.scalars[i], b.scalars[i]) }
      }
    }
    guard let shape = broadcastShape(a.shape, b.shape) else {
      preconditionFailure("cannot broadcast \(a.shape) with \(b.shape)")
    }
    if shape == a.shape, let result = broadcastFast(a, b, op) { return result }
    let strideA = broadcastStrides(a.shape, to: shape)
    let strideB = broadcastStrides(b.shape, to: shape)
    let rank = shape.count
    return Tensor(shape: shape) { out in
      // Odometer over the output index, tracking the source offsets of both operands.
      var index = [Int](repeating: 0, count: rank)
      var (offsetA, offsetB) = (0, 0)
      for o in 0..<out.count {
        out[o] = op(a.scalars[offsetA], b.scalars[offsetB])
        var axis = rank - 1
        while axis >= 0 {
          index[axis] += 1
          offsetA += strideA[axis]
          offsetB += strideB[axis]
          if index[axis] < shape[axis] { break }
          offsetA -= strideA[axis] * shape[axis]
          offsetB -= strideB[axis] * shape[axis]
          index[axis] = 0
          axis -= 1
        }
      }
    }
  }

  /// The two broadcasts the models use, without index arithmetic per element: `b` constant over
  /// trailing axes (a per-channel value over NCHW: `[n, c, 1, 1]`) or `b` covering only the
  /// trailing axes (a bias `[c]` over `[..., c]`).
  private static func broadcastFast(_ a: Tensor, _ b: Tensor, _ op: (Float, Float) -> Float)
    -> Tensor?
  {
    let lead = a.rank - b.rank
    let aligned = [Int](repeating: 1, count: lead) + b.shape
    // Case 1: aligned == a.shape[..<k] + [1, 1, ...].
    if let firstOne = (0...a.rank).first(where: { axis in
      aligned[axis...].allSatisfy { $0 == 1 } && Array(aligned[..<axis]) == Array(a.shape[..<axis])
    }) {
      let inner = a.shape[firstOne...].reduce(1, *)
      return Tensor(shape: a.shape) { out in
        for outer in 0..<b.count {
          let value = b.scalars[outer]
          for i in (outer * inner)..<((outer + 1) * inner) { out[i] = op(a.scalars[i], value) }
        }
      }
    }
    // Case 2: b is exactly the trailing axes of a.
    if Array(a.shape.suffix(b.rank)) == b.shape {
      let inner = b.count
      return Tensor(shape: a.shape) { out in
        for i in 0..<a.count { out[i] = op(a.scalars[i], b.scalars[i % inner]) }
      }
    }
    return nil
  }

  /// Strides of `shape` read as the (right-aligned) broadcast `target`: 0 on stretched axes.
  private static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    let own = strides(of: shape)
    let lead = target.count - shape.count
    return (0..<target.count).map { axis in
      axis < lead || shape[axis - lead] == 1 ? 0 : own[axis - lead]
    }
  }
}

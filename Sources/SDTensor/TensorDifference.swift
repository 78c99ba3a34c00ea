// How two tensors differ, element by element: the max absolute and relative difference and
// where the worst one is (llm.c's check_tensor). The tests and `sd verify` judge reference
// activations with it.

/// How two tensors differ.
public struct TensorDifference: CustomStringConvertible, Sendable {
  /// What was compared (with both shapes when they differ).
  public let name: String
  /// The expected shape.
  public let shape: [Int]
  /// max |actual − expected| (∞ for a NaN or a shape mismatch).
  public let maxAbsolute: Float
  /// max |actual − expected| / max(|expected|, 1e-6).
  public let maxRelative: Float
  /// Where the largest absolute difference is, and the two values there.
  public let worstIndex: [Int]
  /// The expected value at `worstIndex` (0 when the tensors are empty or the shapes differ).
  public let expectedAtWorst: Float
  /// The actual value at `worstIndex` (0 when the tensors are empty or the shapes differ).
  public let actualAtWorst: Float
  /// max(1, max |expected|): what a relative tolerance is measured against.
  public let scale: Float
  /// Whether the two shapes are equal; when false, no element was compared.
  public let shapesMatch: Bool

  /// Whether the difference is within `relative · max(1, max|expected|)` everywhere.
  public func isWithin(_ relative: Float) -> Bool {
    shapesMatch && maxAbsolute <= relative * scale
  }

  /// One line: name, shape, max absolute and relative difference, and the worst element.
  public var description: String {
    guard shapesMatch else { return "\(name): shape mismatch" }
    return
      "\(name) \(shape): max |Δ| \(maxAbsolute) (allowed scale \(scale)), max rel \(maxRelative)"
      + " at \(worstIndex): expected \(expectedAtWorst), got \(actualAtWorst)"
  }
}

/// Compares `actual` with `expected` element by element.
public func compare(_ actual: Tensor, _ expected: Tensor, name: String = "tensor")
  -> TensorDifference
{
  guard actual.shape == expected.shape else {
    return TensorDifference(
      name: "\(name): got \(actual.shape), expected \(expected.shape)", shape: expected.shape,
      maxAbsolute: .infinity, maxRelative: .infinity, worstIndex: [], expectedAtWorst: 0,
      actualAtWorst: 0, scale: 1, shapesMatch: false)
  }
  var worst = 0
  var maxAbsolute: Float = 0
  var maxRelative: Float = 0
  for i in 0..<expected.count {
    let difference = abs(actual.scalars[i] - expected.scalars[i])
    // NaN anywhere is a failure; make it the worst.
    if difference.isNaN || difference > maxAbsolute {
      maxAbsolute = difference.isNaN ? .infinity : difference
      worst = i
    }
    maxRelative = max(maxRelative, difference / max(abs(expected.scalars[i]), 1e-6))
  }
  var index: [Int] = []
  var remainder = worst
  for extent in Tensor.strides(of: expected.shape) {
    index.append(remainder / extent)
    remainder %= extent
  }
  return TensorDifference(
    name: name, shape: expected.shape, maxAbsolute: maxAbsolute, maxRelative: maxRelative,
    worstIndex: index, expectedAtWorst: expected.scalars.isEmpty ? 0 : expected.scalars[worst],
    actualAtWorst: actual.scalars.isEmpty ? 0 : actual.scalars[worst],
    scale: max(1, expected.maxAbs), shapesMatch: true)
}

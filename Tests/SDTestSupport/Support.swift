// Helpers shared by the test targets: locating committed fixtures and comparing tensors with a
// report that says where they differ (llm.c's check_tensor).

import Foundation
import SDTensor

/// The repository's `weights/fixtures` folder, found relative to this source file so tests need
/// no resources copied and no working-directory assumptions.
public let fixturesDirectory: URL = URL(fileURLWithPath: #filePath)
  .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("weights/fixtures")

/// The path of a file under `weights/fixtures`.
public func fixturePath(_ name: String) -> String {
  fixturesDirectory.appendingPathComponent(name).path
}

/// Opens a committed fixture file.
public func fixture(_ name: String) throws -> SafeTensorsFile {
  try SafeTensorsFile(path: fixturePath(name))
}

/// The fp32 reference tolerance of DESIGN.md: max |ours − ref| ≤ 1e-4 · max(1, max|ref|).
public let referenceTolerance: Float = 1e-4

/// How two tensors differ.
public struct TensorDifference: CustomStringConvertible, Sendable {
  public let name: String
  public let shape: [Int]
  public let maxAbsolute: Float
  public let maxRelative: Float
  public let worstIndex: [Int]
  public let expectedAtWorst: Float
  public let actualAtWorst: Float
  public let scale: Float
  public let shapesMatch: Bool

  /// Whether the difference is within `relative · max(1, max|expected|)` everywhere.
  public func isWithin(_ relative: Float) -> Bool {
    shapesMatch && maxAbsolute <= relative * scale
  }

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

/// A deterministic pseudo-random tensor for kernel tests (values in [-1, 1)).
public func seededTensor(_ shape: [Int], seed: UInt64) -> Tensor {
  var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
  let count = shape.reduce(1, *)
  var values = [Float](repeating: 0, count: count)
  for i in 0..<count {
    // SplitMix64.
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    values[i] = Float(z >> 40) / Float(1 << 23) - 1
  }
  return Tensor(shape: shape, scalars: values)
}

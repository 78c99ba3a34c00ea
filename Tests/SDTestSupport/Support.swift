// Helpers shared by the test targets: locating committed fixtures, the reference tolerance, the
// one close-comparison expectation and seeded inputs.

import Foundation
import SDTensor
import Testing

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

/// Expects `actual` within `tolerance` of `expected` (max |Δ| ≤ tolerance · max(1, max|ref|)),
/// the failure naming the tensor, its worst element and the error; returns the error relative
/// to that scale, so it reads against the tolerance.
@discardableResult
public func expectClose(
  _ actual: Tensor, _ expected: Tensor, _ name: String, tolerance: Float = referenceTolerance,
  sourceLocation: SourceLocation = #_sourceLocation
) -> Float {
  let difference = compare(actual, expected, name: name)
  #expect(difference.isWithin(tolerance), "\(difference)", sourceLocation: sourceLocation)
  return difference.maxAbsolute / difference.scale
}

/// Mutations per fuzz test: short in `swift test`; SD_FUZZ_ITERATIONS raises it (the full run
/// the hostile-input issues ask for is 10 000).
public let fuzzIterations =
  ProcessInfo.processInfo.environment["SD_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 600

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

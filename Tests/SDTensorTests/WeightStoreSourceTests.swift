// Key-map sources that rearrange a stored tensor: a range of its rows (OpenCLIP's stacked q/k/v
// `in_proj_weight`) and a transpose (its `text_projection`), in Float32 and half precision.

import SDTensor
import Testing

@Suite("weight store sources: rows and transposes")
struct WeightStoreSourceTests {
  let directory: TemporaryDirectory
  let path: String

  /// A 6×2 stored tensor with values 0..<12 (row r = [2r, 2r + 1]) and a 2×3 one.
  init() throws {
    directory = try TemporaryDirectory()
    path = directory.path("w.safetensors")
    try SafeTensorsWriter.write(
      [
        "stacked": Tensor(shape: [6, 2], scalars: (0..<12).map(Float.init)),
        "projection": Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]),
      ], to: path)
  }

  private func store(keepsHalfPrecision: Bool = false) throws -> WeightStore {
    let map: [String: WeightStore.Source] = [
      "q.weight": .init(storedName: "stacked", rows: 0..<2),
      "k.weight": .init(storedName: "stacked", rows: 2..<4),
      "v.weight": .init(storedName: "stacked", rows: 4..<6),
      "proj.weight": .init(storedName: "projection", isTransposed: true),
      "bad.weight": .init(storedName: "stacked", rows: 4..<8),
    ]
    return try WeightStore(paths: [path], keyMap: map, keepsHalfPrecision: keepsHalfPrecision)
  }

  @Test("rows a..<b of a stored tensor are read as their own tensor")
  func rows() throws {
    let weights = try store()
    #expect(try weights.tensor("q.weight", shape: [2, 2]).scalars == [0, 1, 2, 3])
    #expect(try weights.tensor("k.weight", shape: [2, 2]).scalars == [4, 5, 6, 7])
    #expect(
      try weights.weight("v.weight", shape: [2, 2]).float(options: ComputeOptions(threadCount: 1))
        .scalars == [8, 9, 10, 11])
    #expect(weights.shape(of: "k.weight") == [2, 2])
    // All three read the one stored tensor, which then counts as read.
    #expect(weights.unreadKeys() == ["projection"])
  }

  @Test("replacements are seen by contains, shape(of:) and keys, and read in place of the file")
  func replacements() throws {
    let replacement = Weight(Tensor(shape: [2, 2], scalars: [9, 8, 7, 6]))
    let weights = WeightStore(
      try store(), replacing: ["k.weight": replacement, "extra.weight": replacement])
    #expect(weights.contains("extra.weight"))
    #expect(weights.shape(of: "extra.weight") == [2, 2])
    #expect(weights.keys.contains("extra.weight") && weights.keys.contains("k.weight"))
    #expect(try weights.tensor("k.weight", shape: [2, 2]).scalars == [9, 8, 7, 6])
    #expect(try weights.tensor("q.weight", shape: [2, 2]).scalars == [0, 1, 2, 3])
  }

  @Test("a transposed source gives the stored matrix transposed")
  func transpose() throws {
    let weights = try store()
    #expect(weights.shape(of: "proj.weight") == [3, 2])
    #expect(try weights.tensor("proj.weight", shape: [3, 2]).scalars == [1, 4, 2, 5, 3, 6])
    let weight = try weights.weight("proj.weight", shape: [3, 2])
    #expect(!weight.isFileBacked)
    #expect(weight.float(options: ComputeOptions(threadCount: 1)).scalars == [1, 4, 2, 5, 3, 6])
  }

  @Test("half precision keeps the rearranged values")
  func halfPrecision() throws {
    let weights = try store(keepsHalfPrecision: true)
    let k = try weights.weight("k.weight", shape: [2, 2])
    #expect(k.isHalfPrecision)
    #expect(k.float(options: ComputeOptions(threadCount: 1)).scalars == [4, 5, 6, 7])
    let projection = try weights.weight("proj.weight", shape: [3, 2])
    #expect(
      projection.float(options: ComputeOptions(threadCount: 1)).scalars == [1, 4, 2, 5, 3, 6])
  }

  @Test("rows past the stored tensor, or the wrong shape, are a shape mismatch naming the rows")
  func mismatch() throws {
    let weights = try store()
    #expect(weights.shape(of: "bad.weight") == nil)
    #expect {
      _ = try weights.tensor("bad.weight", shape: [4, 2])
    } throws: { error in
      guard case .shapeMismatch(let key, let expected, let found, _) = error as? WeightError else {
        return false
      }
      return key == "stacked rows 4..<8" && expected == [4, 2] && found == [6, 2]
    }
    #expect {
      _ = try weights.tensor("proj.weight", shape: [2, 3])
    } throws: { error in
      guard case .shapeMismatch(let key, _, let found, _) = error as? WeightError else {
        return false
      }
      return key == "projection transposed" && found == [3, 2]
    }
  }
}

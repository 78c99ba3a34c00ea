// The safetensors reader and writer: round trips, dtypes, and a typed error for every kind of
// corrupt or lying file.

import Foundation
import SDTestSupport
import SDTensor
import Testing

/// A temporary directory removed when the value goes away.
final class TemporaryDirectory {
  let url: URL
  init() throws {
    url = FileManager.default.temporaryDirectory.appendingPathComponent(
      "sdtests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }
  func path(_ name: String) -> String { url.appendingPathComponent(name).path }
  deinit { try? FileManager.default.removeItem(at: url) }
}

/// Bytes of a safetensors file with the given header text and data.
func safetensorsBytes(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
  let headerBytes = Array(header.utf8)
  var bytes: [UInt8] = []
  withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian) {
    bytes.append(contentsOf: $0)
  }
  return bytes + headerBytes + data
}

@Suite("safetensors reader and writer")
struct SafeTensorsTests {
  @Test("write then read gives the same tensors and metadata")
  func roundTrip() throws {
    let directory = try TemporaryDirectory()
    let path = directory.path("a.safetensors")
    let tensors = [
      "b": seededTensor([3, 4], seed: 1), "a.weight": seededTensor([5], seed: 2),
      "empty": Tensor(zeros: [0, 3]),
    ]
    try SafeTensorsWriter.write(tensors, metadata: ["seed": "7"], to: path)
    let file = try SafeTensorsFile(path: path)
    #expect(file.names == ["a.weight", "b", "empty"])
    #expect(file.metadata == ["seed": "7"])
    for (name, tensor) in tensors { #expect(try file.tensor(name) == tensor) }
  }

  @Test("F16 and BF16 are widened exactly")
  func halfPrecision() throws {
    let directory = try TemporaryDirectory()
    let path = directory.path("h.safetensors")
    // 1.5 = 0x3E00 (f16), -2.0 = 0xC000 (f16); 1.5 = 0x3FC0 (bf16), -2 = 0xC000 (bf16).
    let header =
      #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}}"#
    try Data(
      safetensorsBytes(header: header, data: [0x00, 0x3E, 0x00, 0xC0, 0xC0, 0x3F, 0x00, 0xC0])
    ).write(to: URL(fileURLWithPath: path))
    let file = try SafeTensorsFile(path: path)
    #expect(try file.tensor("h").scalars == [1.5, -2])
    #expect(try file.tensor("b").scalars == [1.5, -2])
  }

  /// Each malformed file and the error it must give.
  static let corruptCases: [(String, [UInt8], String)] = [
    ("shorter than 8 bytes", [1, 2, 3], "shorter than the 8-byte"),
    (
      "header length beyond the file",
      safetensorsBytes(header: "{}", data: [], declaredLength: 1000), "exceeds the file size"
    ),
    (
      "header length near Int64.max",
      safetensorsBytes(header: "{}", data: [], declaredLength: UInt64(Int64.max) - 3),
      "exceeds the file size"
    ),
    ("invalid JSON", safetensorsBytes(header: "{\"a\":", data: []), "invalid JSON"),
    ("header not an object", safetensorsBytes(header: "[1,2]", data: []), "not a JSON object"),
    (
      "offsets past the data",
      safetensorsBytes(
        header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0]),
      "outside"
    ),
    (
      "negative offset",
      safetensorsBytes(
        header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, data: [0, 0, 0, 0]),
      "outside"
    ),
    (
      "huge offsets",
      safetensorsBytes(
        header:
          #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775800,9223372036854775804]}}"#,
        data: [0, 0, 0, 0]), "outside"
    ),
    (
      "overlapping tensors",
      safetensorsBytes(
        header:
          #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        data: Array(repeating: 0, count: 8)), "overlap"
    ),
    (
      "shape and byte length disagree",
      safetensorsBytes(
        header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        data: Array(repeating: 0, count: 8)), "needs 12 bytes"
    ),
    (
      "shape product overflows",
      safetensorsBytes(
        header: #"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
        data: Array(repeating: 0, count: 8)), "larger than the file"
    ),
    (
      "duplicate keys",
      safetensorsBytes(
        header:
          #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        data: [0, 0, 0, 0]), "duplicate key"
    ),
    (
      "non-UTF-8 name",
      safetensorsBytes(header: "{\"\u{FFFD}\":1}", data: []).map { $0 == 0xEF ? 0xFF : $0 }, "UTF-8"
    ),
    (
      "deeply nested JSON",
      safetensorsBytes(header: String(repeating: "[", count: 10000), data: []), "nested too deeply"
    ),
  ]

  @Test("corrupt files give malformedFile naming the problem", arguments: 0..<corruptCases.count)
  func corrupt(index: Int) throws {
    let (label, bytes, reason) = Self.corruptCases[index]
    let directory = try TemporaryDirectory()
    let path = directory.path("bad.safetensors")
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    do {
      _ = try SafeTensorsFile(path: path)
      Issue.record("\(label): no error")
    } catch {
      guard case .malformedFile(let errorPath, let message) = error else {
        Issue.record("\(label): wrong error \(error)")
        return
      }
      #expect(errorPath == path)
      #expect(message.contains(reason), "\(label): \(message)")
    }
  }

  @Test("unknown dtypes are refused in the header; integer tensors only when read")
  func dtypes() throws {
    let directory = try TemporaryDirectory()
    let unknown = directory.path("u.safetensors")
    try Data(
      safetensorsBytes(header: #"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#, data: [0])
    ).write(to: URL(fileURLWithPath: unknown))
    #expect(throws: WeightError.unsupportedDType(key: "a", dtype: "Q7", file: unknown)) {
      try SafeTensorsFile(path: unknown)
    }
    let integers = directory.path("i.safetensors")
    try Data(
      safetensorsBytes(
        header: #"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
        data: Array(repeating: 0, count: 8))
    ).write(to: URL(fileURLWithPath: integers))
    let file = try SafeTensorsFile(path: integers)
    #expect(throws: WeightError.unsupportedDType(key: "ids", dtype: "I64", file: integers)) {
      try file.tensor("ids")
    }
  }

  @Test("missing files and directories give unreadableFile")
  func unreadable() throws {
    let directory = try TemporaryDirectory()
    #expect(throws: WeightError.self) {
      try SafeTensorsFile(path: directory.path("nope.safetensors"))
    }
    do {
      _ = try SafeTensorsFile(path: directory.url.path)
      Issue.record("a directory opened as a file")
    } catch {
      guard case .unreadableFile = error else { Issue.record("wrong error \(error)"); return }
    }
  }

  @Test("the weight store checks shapes, names missing keys and reports unread keys")
  func weightStore() throws {
    let directory = try TemporaryDirectory()
    let path = directory.path("w.safetensors")
    try SafeTensorsWriter.write(
      ["layer.weight": seededTensor([4, 3], seed: 1), "layer.bias": seededTensor([4], seed: 2)],
      to: path)
    let store = try WeightStore(paths: [path])
    _ = try store.tensor("layer.weight", shape: [4, 3])
    #expect(
      throws: WeightError.shapeMismatch(key: "layer.bias", expected: [5], found: [4], file: path)
    ) {
      try store.tensor("layer.bias", shape: [5])
    }
    #expect(throws: WeightError.missingTensor(key: "other.weight", file: path)) {
      try store.tensor("other.weight", shape: [1])
    }
    #expect(store.unreadKeys() == ["layer.bias"])
    let renamed = try WeightStore(
      paths: [path], keyMap: ["w": .init(storedName: "layer.weight", allowsReshape: true)])
    #expect(try renamed.tensor("w", shape: [12]).shape == [12])
  }

  @Test("a failed atomic write leaves nothing behind")
  func atomicWrite() throws {
    let directory = try TemporaryDirectory()
    let target = directory.path("missing-dir/out.safetensors")
    #expect(throws: WeightError.self) {
      try SafeTensorsWriter.write(["a": Tensor(zeros: [1])], to: target)
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path).isEmpty)
  }
}

/// Half-precision weights: widening reproduces Float(Float16) for every bit pattern, and a
/// store that keeps half precision reads F16 data exactly and rounds F32 data to nearest.
@Suite struct HalfPrecisionWeightTests {
  @Test func wideningMatchesFloat16ForEveryPattern() {
    let bits = (0...UInt16.max).map { $0 }
    let widened = Weight(shape: [bits.count], halfBits: bits).float(
      options: ComputeOptions(threadCount: 2))
    for (pattern, value) in zip(bits, widened.scalars) {
      let expected = Float(Float16(bitPattern: pattern))
      #expect(
        value.bitPattern == expected.bitPattern || (value.isNaN && expected.isNaN),
        "pattern \(pattern)")
    }
  }

  @Test func storeKeepsHalfPrecision() throws {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
      "half-\(UUID().uuidString).safetensors")
    defer { try? FileManager.default.removeItem(at: url) }
    let values = Tensor(shape: [2, 3], scalars: [1, -2.5, 0.1, 1e-6, 65504, 3.14159])
    try SafeTensorsWriter.write(["w": values], to: url.path)
    let store = try WeightStore(paths: [url.path], keepsHalfPrecision: true)
    let weight = try store.weight("w", shape: [2, 3])
    #expect(weight.isHalfPrecision && weight.byteCount == 12)
    #expect(
      weight.float(options: ComputeOptions()).scalars == values.scalars.map { Float(Float16($0)) })
    #expect(store.unreadKeys().isEmpty)
    let full = try WeightStore(paths: [url.path]).weight("w", shape: [2, 3])
    #expect(!full.isHalfPrecision && full.float(options: ComputeOptions()) == values)
    // F32 data read as Float32 is used in place in the file mapping.
    #expect(full.isFileBacked && full.scalars(1..<3) == [-2.5, 0.1])
    #expect(
      linear(Tensor(shape: [1, 3], scalars: [1, 0, 0]), weight: full, bias: nil).scalars == [
        1, 1e-6,
      ])
  }

  /// F16 data kept in half precision is used in place in the file mapping, and still reads the
  /// same after the store drops its pages from resident memory.
  @Test func f16WeightsAreUsedInPlaceAndSurviveReleasedPages() throws {
    let path = fixturePath("tiny-sd15/text_encoder/model.safetensors")
    let key = "embeddings.token_embedding.weight"
    let expected = try SafeTensorsFile(path: path).tensor(key)
    let store = try WeightStore(paths: [path], keepsHalfPrecision: true)
    let weight = try store.weight(key, shape: [49408, 32])
    #expect(weight.isFileBacked && weight.isHalfPrecision && weight.byteCount == 49408 * 32 * 2)
    #expect(weight.float(options: ComputeOptions()) == expected)
    store.releaseResidentPages()
    #expect(weight.float(options: ComputeOptions(threadCount: 2)) == expected)
    let copied = try WeightStore(paths: [path]).weight(key, shape: [49408, 32])
    #expect(!copied.isFileBacked && copied.float(options: ComputeOptions()) == expected)
  }
}

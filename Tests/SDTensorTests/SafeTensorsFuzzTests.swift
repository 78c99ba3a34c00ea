// Seeded mutation fuzzing of the safetensors reader: every mutated file must either load (and
// then every tensor reads back with the size its header declares) or throw a WeightError. A crash,
// a hang or a huge allocation would take the test process down. `swift test` runs a short pass;
// SD_FUZZ_ITERATIONS=10000 swift test --filter SafeTensorsFuzz runs the full count.

import Foundation
import SDTestSupport
import SDTensor
import Testing

/// SplitMix64: a small deterministic generator for the mutations.
struct MutationRandom {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
}

/// The mutation kinds, each aimed at one validation path of the reader.
enum Mutation: CaseIterable {
  case flipBytes, truncate, headerLength, offsets, shapes, dtype, duplicateKey, invalidUTF8,
    swapJSON

  func apply(to original: [UInt8], random: inout MutationRandom) -> [UInt8] {
    var bytes = original
    let headerLength = Int(
      bytes[0..<8].enumerated().reduce(UInt64(0)) {
        $0 | UInt64($1.element) << (8 * UInt64($1.offset))
      })
    let headerRange = 8..<min(bytes.count, 8 + headerLength)
    func replaceInHeader(_ pattern: String, with replacement: String) {
      var header = String(decoding: bytes[headerRange], as: UTF8.self)
      guard let range = header.ranges(of: pattern).randomElement(using: &random) else { return }
      header.replaceSubrange(range, with: replacement)
      bytes =
        lengthPrefix(header.utf8.count) + Array(header.utf8) + bytes[headerRange.upperBound...]
    }
    let hostile = [
      "-1", "0", "9223372036854775807", "18446744073709551616", "1e308", "4294967296",
      "-9223372036854775808", "3.5", "null", "\"7\"",
    ]
    switch self {
    case .flipBytes:
      for _ in 0...random.below(8) {
        // Mostly the header, where the structure lives.
        let index =
          random.below(4) == 0 ? random.below(bytes.count) : random.below(headerRange.upperBound)
        bytes[index] ^= UInt8(truncatingIfNeeded: 1 + random.below(255))
      }
    case .truncate:
      bytes = Array(bytes.prefix(random.below(bytes.count)))
    case .headerLength:
      let values: [UInt64] = [
        0, 1, 7, UInt64(headerLength - 1), UInt64(headerLength + 1), UInt64(bytes.count),
        UInt64(Int64.max), UInt64.max, UInt64(Int64.max) - 7, 100_000_001,
      ]
      let value = values[random.below(values.count)]
      for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    case .offsets:
      replaceInHeader(
        "\"data_offsets\":[", with: "\"data_offsets\":[\(hostile[random.below(hostile.count)]),")
    case .shapes:
      replaceInHeader(
        "\"shape\":[",
        with:
          "\"shape\":[\(hostile[random.below(hostile.count)]),\(hostile[random.below(hostile.count)]),"
      )
    case .dtype:
      let dtypes = [
        "\"F64\"", "\"I64\"", "\"Q4\"", "\"\"", "7", "\"BOOL\"", "\"F8_E4M3\"", "\"U8\"",
      ]
      replaceInHeader("\"F32\"", with: dtypes[random.below(dtypes.count)])
    case .duplicateKey:
      var header = String(decoding: bytes[headerRange], as: UTF8.self)
      if let close = header.lastIndex(of: "}"), let firstKey = header.firstRange(of: "\":{") {
        let start = header.index(after: header.startIndex)
        let key = header[start..<firstKey.lowerBound]
        header.insert(
          contentsOf: ",\(key)\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
          at: close)
        bytes =
          lengthPrefix(header.utf8.count) + Array(header.utf8) + bytes[headerRange.upperBound...]
      }
    case .invalidUTF8:
      if let quote = bytes[headerRange].firstIndex(of: UInt8(ascii: "\"")) {
        bytes.insert(contentsOf: [0xC3, 0x28, 0xFF], at: quote + 1)
        let length = headerLength + 3
        bytes.replaceSubrange(0..<8, with: lengthPrefix(length))
      }
    case .swapJSON:
      let fragments = [
        "{", "}", "[", "]", ":", ",", "\\", "\"", "\u{0}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
      ]
      let index = headerRange.lowerBound + random.below(headerRange.count)
      let fragment = Array(fragments[random.below(fragments.count)].utf8)
      bytes.replaceSubrange(index..<min(index + 1, bytes.count), with: fragment)
    }
    return bytes
  }

  private func lengthPrefix(_ length: Int) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: UInt64(length) >> (8 * UInt64($0))) }
  }
}

extension Array {
  fileprivate func randomElement(using random: inout MutationRandom) -> Element? {
    isEmpty ? nil : self[random.below(count)]
  }
}

@Suite("safetensors reader under seeded mutation", .serialized)
struct SafeTensorsFuzzTests {
  static let iterations = fuzzIterations

  @Test("mutated files load consistently or throw WeightError, never crash")
  func mutations() throws {
    let seeds = [
      fixturePath("ops.safetensors"),
      fixturePath("tiny-sd15/unet/diffusion_pytorch_model.safetensors"),
      fixturePath("tiny-sd15/text_encoder/model.safetensors"),
    ]
    let originals = try seeds.map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: $0))) }
    let directory = try TemporaryDirectory()
    let path = directory.path("mutant.safetensors")
    var random = MutationRandom(state: 20_261_125)
    var loaded = 0
    var rejected: [String: Int] = [:]
    let start = Date()
    for iteration in 0..<Self.iterations {
      let mutation = Mutation.allCases[iteration % Mutation.allCases.count]
      let original = originals[random.below(originals.count)]
      // The header-rewriting mutations want a small header to search; the UNet file is fine too.
      let bytes = mutation.apply(to: original, random: &random)
      try Data(bytes).write(to: URL(fileURLWithPath: path))
      do {
        let file = try SafeTensorsFile(path: path)
        for name in file.names {
          guard let entry = file.entries[name] else { continue }
          do {
            let tensor = try file.tensor(name)
            #expect(
              tensor.count * entry.dtype.size == entry.dataRange.count,
              "iteration \(iteration): \(name)")
          } catch {
            // Only non-float dtypes may refuse to read once the header was accepted.
            #expect(!entry.dtype.isReadable, "iteration \(iteration): \(name) \(error)")
          }
        }
        loaded += 1
      } catch {
        let kind = "\(error)".prefix(40)
        rejected[String(kind), default: 0] += 1
      }
    }
    let seconds = Date().timeIntervalSince(start)
    print(
      "fuzz: \(Self.iterations) mutations in \(String(format: "%.1f", seconds)) s, \(loaded) loaded, \(Self.iterations - loaded) rejected with WeightError, 0 crashes"
    )
    #expect(loaded + rejected.values.reduce(0, +) == Self.iterations)
    #expect(
      rejected.count > 3, "the mutations should reach several validation paths: \(rejected.keys)")
  }
}

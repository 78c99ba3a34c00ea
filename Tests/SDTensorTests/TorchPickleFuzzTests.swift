// Seeded mutation fuzzing of the torch.save reader: every mutated file must either load (and
// then every float tensor widens to as many elements as its shape says, every other refuses) or
// throw a WeightError. A crash, a hang or a huge allocation would take the test process down.
// Mutations hit the ZIP structure directly and the pickle and storages through a re-zip with
// correct CRCs, so they get past the checksum into the unpickler. `swift test` runs a short
// pass; SD_FUZZ_ITERATIONS=10000 swift test --filter TorchPickleFuzz runs the full count.

import Foundation
import SDTestSupport
import SDTensor
import Testing

/// The mutation kinds: three on the raw archive, the rest on data.pkl or a storage.
enum TorchMutation: CaseIterable {
  case flipArchiveBytes, truncate, directoryField, flipPickleBytes, insertOpcodes, deleteSpan,
    duplicateSpan, integers, storageClass, hostileFragment, resizeStorage

  /// Opcodes torch writes and some it does not, so inserted bytes parse as more opcodes.
  static let opcodes: [UInt8] =
    Array("(.}])NKMJqrhjtsuaecRbQXG".utf8) + [
      0x80, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x93, 0x94, 0x95, 0x69, 0x6F, 0x81, 0x00,
    ]

  /// Pickle fragments aimed at one check each: refused globals, allowed globals misused, a list
  /// holding itself, deep tuples, lengths past the end, unknown memo slots, wide integers.
  static let fragments: [[UInt8]] = [
    Array("cos\nsystem\n".utf8), Array("ctorch._utils\n_rebuild_tensor_v2\n)R".utf8),
    Array("ccollections\nOrderedDict\n".utf8), Array("ctorch\nFloatStorage\n)R".utf8),
    Array("ctorch\nSize\n".utf8), [0x5D, 0x71, 0x00, 0x68, 0x00, 0x61],
    [0x29] + [UInt8](repeating: 0x85, count: 300), [0x58, 0xFF, 0xFF, 0xFF, 0x7F],
    [0x72, 0xFF, 0xFF, 0xFF, 0xFF], [0x6A, 0xFF, 0xFF, 0xFF, 0x7F], [0x68, 0xFE],
    [0x8A, 0x09] + [UInt8](repeating: 0xFF, count: 9),
    [0x8A, 0x08] + [UInt8](repeating: 0x7F, count: 8),
    [0x4A, 0xFF, 0xFF, 0xFF, 0xFF], [UInt8](repeating: 0x28, count: 100),
    [0x95, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0x8C, 0x03, 0xC3, 0x28, 0xFF],
    Array("(Xstorage".utf8),
  ]

  func apply(to archive: [UInt8], random: inout MutationRandom) -> [UInt8] {
    var bytes = archive
    switch self {
    case .flipArchiveBytes:
      for _ in 0...random.below(8) {
        bytes[random.below(bytes.count)] ^= UInt8(truncatingIfNeeded: 1 + random.below(255))
      }
      return bytes
    case .truncate:
      return Array(bytes.prefix(random.below(bytes.count)))
    case .directoryField:
      // The central directory and end records are the archive's tail.
      let tail = min(bytes.count, 600)
      let offset = bytes.count - 1 - random.below(tail)
      let values: [UInt64] = [
        0, 1, 0xFFFF, 0xFFFF_FFFF, UInt64.max, UInt64(bytes.count), UInt64(bytes.count + 1),
        UInt64(random.next() % 4096),
      ]
      let value = values[random.below(values.count)]
      for i in 0..<[2, 4, 8][random.below(3)] where offset + i < bytes.count {
        bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
      }
      return bytes
    default:
      var entries = zipEntries(archive)
      guard let pickleIndex = entries.firstIndex(where: { $0.name.hasSuffix("/data.pkl") }) else {
        return bytes
      }
      if self == .resizeStorage {
        let storages = entries.indices.filter { entries[$0].name.contains("/data/") }
        if let index = storages.isEmpty ? nil : storages[random.below(storages.count)] {
          let count = entries[index].data.count
          let sizes = [0, 1, max(0, count - 1), count + 1, count * 2, random.below(count + 1)]
          let size = sizes[random.below(sizes.count)]
          entries[index].data =
            size <= count
            ? Array(entries[index].data.prefix(size))
            : entries[index].data + [UInt8](repeating: 0x41, count: size - count)
        }
      } else {
        entries[pickleIndex].data = mutatePickle(entries[pickleIndex].data, random: &random)
      }
      return zipArchive(entries)
    }
  }

  private func mutatePickle(_ original: [UInt8], random: inout MutationRandom) -> [UInt8] {
    var pickle = original
    let position = random.below(pickle.count)
    switch self {
    case .flipPickleBytes:
      for _ in 0...random.below(4) {
        pickle[random.below(pickle.count)] ^= UInt8(truncatingIfNeeded: 1 + random.below(255))
      }
    case .insertOpcodes:
      let inserted = (0...random.below(8)).map { _ in
        Self.opcodes[random.below(Self.opcodes.count)]
      }
      pickle.insert(contentsOf: inserted, at: position)
    case .deleteSpan:
      pickle.removeSubrange(position..<min(pickle.count, position + 1 + random.below(16)))
    case .duplicateSpan:
      let span = pickle[position..<min(pickle.count, position + 1 + random.below(64))]
      pickle.insert(contentsOf: span, at: random.below(pickle.count))
    case .integers:
      // BININT1 arguments are the offsets, sizes, strides and element counts of the tensors.
      let small = pickle.indices.filter { pickle[$0] == 0x4B && $0 + 1 < pickle.count }
      if !small.isEmpty {
        let at = small[random.below(small.count)]
        let wide: [[UInt8]] = [
          [0x4B, 0], [0x4B, 1], [0x4B, 255], [0x4A, 0xFF, 0xFF, 0xFF, 0xFF],
          [0x4A, 0xFF, 0xFF, 0xFF, 0x7F], [0x4D, 0xFF, 0xFF],
          [0x8A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x40],
          [0x8A, 0x08] + [UInt8](repeating: 0xFF, count: 8),
          [0x4E], [0x88],
        ]
        pickle.replaceSubrange(at..<(at + 2), with: wide[random.below(wide.count)])
      }
    case .storageClass:
      // Another dtype for a storage changes its element size against the stored bytes.
      let classes = [
        "HalfStorage", "BFloat16Storage", "LongStorage", "DoubleStorage", "BoolStorage",
        "ByteStorage", "QInt8Storage", "FloatStorage", "",
      ]
      let named = pickle.indices.filter { pickle[$0...].starts(with: Array("Storage\n".utf8)) }
      if !named.isEmpty {
        let end = named[random.below(named.count)] + 7
        var start = end
        while start > 0 && pickle[start - 1] != 0x0A { start -= 1 }
        pickle.replaceSubrange(
          start..<end, with: Array(classes[random.below(classes.count)].utf8))
      }
    default:
      pickle.insert(contentsOf: Self.fragments[random.below(Self.fragments.count)], at: position)
    }
    return pickle
  }
}

/// Checks a loaded object the way a caller would use it: every tensor, at any depth.
private func checkTensors(_ value: TorchValue, _ context: String) {
  switch value {
  case .list(let items), .tuple(let items):
    for item in items { checkTensors(item, context) }
  case .dict(let entries):
    for entry in entries {
      checkTensors(entry.key, context)
      checkTensors(entry.value, context)
    }
  case .tensor(let tensor):
    do {
      let elements = try tensor.float32()
      #expect(elements.count == tensor.shape.reduce(1, *), "\(context): \(tensor.shape)")
      #expect(tensor.dtype.isReadable, "\(context)")
    } catch {
      #expect(!tensor.dtype.isReadable, "\(context): \(error)")
    }
  default: break
  }
}

@Suite("torch.save reader under seeded mutation", .serialized)
struct TorchPickleFuzzTests {
  static let iterations = fuzzIterations

  @Test("mutated torch files load consistently or throw WeightError, never crash")
  func mutations() throws {
    let seeds = try [
      "torch/tensors.pt", "torch/protocol4.pt", "embeddings/bad-hands.pt",
      "embeddings/bad-hands-fp16.pt", "embeddings/learned_embeds.bin", "embeddings/evil.pt",
    ].map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: fixturePath($0)))) }
    var random = MutationRandom(state: 20_261_203)
    var loaded = 0
    var rejected: [String: Int] = [:]
    let start = Date()
    for iteration in 0..<Self.iterations {
      let mutation = TorchMutation.allCases[iteration % TorchMutation.allCases.count]
      let bytes = mutation.apply(to: seeds[random.below(seeds.count)], random: &random)
      do {
        let value = try TorchPickle.load(bytes: bytes, path: "mutant.pt")
        checkTensors(value, "iteration \(iteration) (\(mutation))")
        loaded += 1
      } catch {
        // The reason without its numbers (byte offsets, sizes) says which check fired.
        let reason: String =
          switch error {
          case .malformedTorchFile(_, let reason): reason
          case .refusedPickleGlobal(_, let global): "refused \(global)"
          default: error.description
          }
        let kind = String(reason.filter { !$0.isNumber }.prefix(48))
        rejected[kind, default: 0] += 1
      }
    }
    let seconds = Date().timeIntervalSince(start)
    print(
      "torch fuzz: \(Self.iterations) mutations in \(String(format: "%.1f", seconds)) s, \(loaded) loaded, \(Self.iterations - loaded) rejected with WeightError (\(rejected.count) kinds), 0 crashes"
    )
    for (kind, count) in rejected.sorted(by: { $0.value > $1.value }).prefix(12) {
      print("  \(count)\t\(kind)")
    }
    #expect(loaded + rejected.values.reduce(0, +) == Self.iterations)
    #expect(loaded > 0, "some mutations (a flipped value byte) should still load")
    #expect(
      rejected.count > 10, "the mutations should reach many validation paths: \(rejected.keys)")
  }
}

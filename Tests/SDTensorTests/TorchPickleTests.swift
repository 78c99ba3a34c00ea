// The restricted torch.save reader against files written by torch 2.13
// (weights/make_pickle_fixtures.py): exact values for every dtype and view, the two embedding
// layouts, and a typed refusal naming the global for every hostile pickle.

import Foundation
import SDTestSupport
import SDTensor
import Testing

/// The entries of a ZIP archive written by a trusted tool (the fixtures), in order.
func zipEntries(_ bytes: [UInt8]) -> [(name: String, data: [UInt8])] {
  func integer(_ offset: Int, _ width: Int) -> Int {
    (0..<width).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) }
  }
  let end = bytes.count - 22
  var position = integer(end + 16, 4)
  var entries: [(name: String, data: [UInt8])] = []
  for _ in 0..<integer(end + 10, 2) {
    let (nameLength, extra, comment) = (
      integer(position + 28, 2), integer(position + 30, 2), integer(position + 32, 2)
    )
    let name = String(
      decoding: bytes[(position + 46)..<(position + 46 + nameLength)], as: UTF8.self)
    let local = integer(position + 42, 4)
    let start = local + 30 + integer(local + 26, 2) + integer(local + 28, 2)
    entries.append((name, Array(bytes[start..<(start + integer(position + 20, 4))])))
    position += 46 + nameLength + extra + comment
  }
  return entries
}

/// A ZIP archive of stored entries, as torch writes them (`method` 8 marks one deflated, without
/// compressing it, to test the refusal).
func zipArchive(_ entries: [(name: String, data: [UInt8])], method: UInt16 = 0) -> [UInt8] {
  func little(_ value: Int, _ width: Int) -> [UInt8] {
    (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
  }
  var bytes: [UInt8] = []
  var directory: [UInt8] = []
  for (name, data) in entries {
    let crc = Int(crc32(data))
    let common =
      little(20, 2) + little(0, 2) + little(Int(method), 2) + little(0, 4) + little(crc, 4)
      + little(data.count, 4) + little(data.count, 4) + little(name.utf8.count, 2) + little(0, 2)
    directory +=
      little(0x0201_4B50, 4) + little(20, 2) + common + little(0, 2) + little(0, 2)
      + little(0, 2) + little(0, 4) + little(bytes.count, 4) + Array(name.utf8)
    bytes += little(0x0403_4B50, 4) + common + Array(name.utf8) + data
  }
  return bytes + directory + little(0x0605_4B50, 4) + little(0, 4)
    + little(entries.count, 2) + little(entries.count, 2) + little(directory.count, 4)
    + little(bytes.count, 4) + little(0, 2)
}

func crc32(_ data: [UInt8]) -> UInt32 {
  var crc: UInt32 = 0xFFFF_FFFF
  for byte in data {
    crc ^= UInt32(byte)
    for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
  }
  return crc ^ 0xFFFF_FFFF
}

/// A torch-style archive holding `pickle` and `storages` (`data/<key>`).
func torchArchive(_ pickle: [UInt8], storages: [String: [UInt8]] = [:]) -> [UInt8] {
  zipArchive(
    [("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8))]
      + storages.sorted { $0.key < $1.key }.map { ("archive/data/\($0.key)", $0.value) })
}

/// Pickle bytes for a string (BINUNICODE).
func unicode(_ text: String) -> [UInt8] {
  let utf8 = Array(text.utf8)
  return [0x58] + (0..<4).map { UInt8(truncatingIfNeeded: utf8.count >> (8 * $0)) } + utf8
}

/// `_rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', numel), offset, size,
/// stride, False, OrderedDict())` with small integers (BININT1), then STOP.
func tensorPickle(numel: UInt8, offset: UInt8, size: [UInt8], stride: [UInt8]) -> [UInt8] {
  var bytes: [UInt8] = [0x80, 0x02] + Array("ctorch._utils\n_rebuild_tensor_v2\n(".utf8)
  bytes += [0x28] + unicode("storage") + Array("ctorch\nFloatStorage\n".utf8) + unicode("0")
  bytes += unicode("cpu") + [0x4B, numel, 0x74, 0x51, 0x4B, offset]
  bytes += [0x28] + size.flatMap { [0x4B, $0] } + [0x74]
  bytes += [0x28] + stride.flatMap { [0x4B, $0] } + [0x74]
  bytes += [0x89] + Array("ccollections\nOrderedDict\n)R".utf8) + [0x74, 0x52, 0x2E]
  return bytes
}

private func load(_ name: String) throws -> TorchValue {
  try TorchPickle.load(contentsOf: fixturePath(name))
}

private func refusal(_ body: () throws -> Void) -> WeightError? {
  do { try body() } catch let error as WeightError { return error } catch { return nil }
  return nil
}

@Suite("torch.save reader (restricted unpickler)")
struct TorchPickleTests {
  @Test("every float tensor of tensors.pt matches the reference exactly, views materialised")
  func tensorsMatchTheReference() throws {
    let object = try load("torch/tensors.pt")
    let reference = try fixture("torch/tensors.safetensors")
    let names = [
      "f32", "f16", "bf16", "transposed", "permuted", "slice", "row", "expanded", "parameter",
    ]
    for name in names {
      let tensor = try #require(object[name]?.tensorValue, "\(name)")
      #expect(try tensor.float32() == reference.tensor(name), "\(name)")
    }
    #expect(object["f16"]?.tensorValue?.dtype == .f16)
    #expect(object["bf16"]?.tensorValue?.dtype == .bf16)
    let scalar = try #require(object["scalar"]?.tensorValue).float32()
    let expectedScalar = try reference.tensor("scalar").scalars
    #expect(scalar.shape == [] && scalar.scalars == expectedScalar)
    #expect(try object["empty"]?.tensorValue?.float32() == Tensor(zeros: [0, 4]))
    let state = try #require(object["state_dict"])
    #expect(state.dictEntries?.compactMap(\.key.stringValue) == ["weight", "bias"])
    for key in ["weight", "bias"] {
      #expect(
        try state[key]?.tensorValue?.float32() == reference.tensor("state_dict.\(key)"), "\(key)")
    }
  }

  @Test("non-float tensors keep dtype and shape and refuse to widen")
  func integerTensors() throws {
    let long = try #require(try load("torch/tensors.pt")["long"]?.tensorValue)
    #expect(long.dtype == .i64 && long.shape == [5])
    #expect(throws: WeightError.self) { _ = try long.float32() }
  }

  @Test("plain Python values come through as saved")
  func pythonValues() throws {
    let object = try load("torch/tensors.pt")
    let python = try #require(object["python"])
    #expect(python["int"]?.intValue == 7)
    #expect(python["big"]?.intValue == 1 << 40)
    #expect(python["negative"]?.intValue == -3)
    guard case .float(let quarter) = python["float"], case .null = python["none"],
      case .bool(true) = python["true"], case .bool(false) = python["false"],
      case .list(let list) = python["list"], case .tuple(let tuple) = python["tuple"],
      case .tuple(let size) = object["size"]
    else {
      Issue.record("unexpected python values \(python)")
      return
    }
    #expect(quarter == 0.25)
    #expect(python["text"]?.stringValue == "h\u{E9}llo \u{2713}")
    #expect(list.count == 3 && list[0].intValue == 1 && list[1].stringValue == "a")
    #expect(tuple.map(\.intValue) == [1, 2, 3])
    #expect(size.map(\.intValue) == [2, 3])
  }

  @Test("protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL) reads as protocol 2")
  func protocol4() throws {
    let tensor = try #require(try load("torch/protocol4.pt")["f32"]?.tensorValue)
    #expect(try tensor.float32() == fixture("torch/tensors.safetensors").tensor("f32"))
  }

  @Test("A1111 .pt (F32 and F16) and diffusers learned_embeds.bin hold the safetensors values")
  func embeddingLayouts() throws {
    let badHands = try fixture("embeddings/bad-hands.safetensors").tensor("emb_params")
    let a1111 = try load("embeddings/bad-hands.pt")
    #expect(try a1111["string_to_param"]?["*"]?.tensorValue?.float32() == badHands)
    #expect(a1111["string_to_token"]?["*"]?.intValue == 265)
    #expect(a1111["name"]?.stringValue == "bad-hands" && a1111["step"]?.intValue == 1500)
    let half = try load("embeddings/bad-hands-fp16.pt")["string_to_param"]?["*"]?.tensorValue
    #expect(half?.dtype == .f16)
    let rounded = badHands.scalars.map { Float(Float16($0)) }
    #expect(try half?.float32() == Tensor(shape: badHands.shape, scalars: rounded))
    let diffusers = try load("embeddings/learned_embeds.bin")
    #expect(
      try diffusers["cat-toy"]?.tensorValue?.float32()
        == fixture("embeddings/cat-toy.safetensors").tensor("cat-toy"))
  }

  @Test(
    "hostile pickles are refused naming the global",
    arguments: [
      ("torch/os-system.pt", "os.system"), ("torch/builtins-eval.pt", "builtins.eval"),
      ("torch/inst.pt", "os.system"), ("embeddings/evil.pt", "posix.system"),
    ])
  func hostileGlobals(file: String, global: String) {
    let error = refusal { _ = try load(file) }
    #expect(error == .refusedPickleGlobal(path: fixturePath(file), global: global))
    #expect(
      error?.description.contains("the pickle calls \(global), which is not a tensor") == true,
      "\(String(describing: error))")
  }

  @Test(
    "hand-written hostile globals are refused before anything else",
    arguments: [
      "c__builtin__\ngetattr\n", "cbuiltins\nexec\n", "cposix\nsystem\n", "ctorch\nload\n",
      "csubprocess\nPopen\n", "ctorch._utils\n_rebuild_tensor\n",
      "cnumpy.core.multiarray\nscalar\n",
    ])
  func moreGlobals(global: String) {
    let name = global.dropFirst().split(separator: "\n").joined(separator: ".")
    let bytes = torchArchive([0x80, 0x02] + Array(global.utf8) + Array(")R.".utf8))
    let error = refusal { _ = try TorchPickle.load(bytes: bytes, path: "x.pt") }
    #expect(error == .refusedPickleGlobal(path: "x.pt", global: name))
  }

  @Test("OBJ, NEWOBJ and other opcodes torch does not write are refused by name")
  func refusedOpcodes() {
    let error = refusal { _ = try load("torch/obj.pt") }
    #expect(
      error?.description.contains("opcode OBJ (0x6f)") == true, "\(String(describing: error))")
    for (opcode, name) in [(0x81, "NEWOBJ"), (0x92, "NEWOBJ_EX"), (0x82, "EXT1"), (0x50, "PERSID")]
    {
      let bytes = torchArchive([0x80, 0x02, 0x29, 0x29, UInt8(opcode), 0x2E])
      let error = refusal { _ = try TorchPickle.load(bytes: bytes, path: "x.pt") }
      #expect(error?.description.contains("opcode \(name)") == true, "\(String(describing: error))")
    }
  }

  @Test("the legacy format and other non-archives are refused saying what they are")
  func legacyFormat() {
    let error = refusal { _ = try load("torch/legacy.pt") }
    guard case .malformedTorchFile(_, let reason) = error else {
      Issue.record("\(String(describing: error))")
      return
    }
    #expect(reason.contains("legacy format") && reason.contains("1.6"), "\(reason)")
    let text = refusal { _ = try TorchPickle.load(bytes: Array("hello".utf8), path: "x.pt") }
    #expect(text?.description.contains("not a ZIP archive") == true)
  }

  @Test("strided, offset and 0-d views of a hand-made storage")
  func handMadeViews() throws {
    let storage = (0..<12).flatMap {
      withUnsafeBytes(of: Float($0).bitPattern.littleEndian, Array.init)
    }
    let transposed = torchArchive(
      tensorPickle(numel: 12, offset: 1, size: [3, 2], stride: [1, 4]), storages: ["0": storage])
    let value = try TorchPickle.load(bytes: transposed, path: "x.pt")
    #expect(
      try value.tensorValue?.float32() == Tensor(shape: [3, 2], scalars: [1, 5, 2, 6, 3, 7]))
    let scalar = torchArchive(
      tensorPickle(numel: 12, offset: 11, size: [], stride: []), storages: ["0": storage])
    #expect(
      try TorchPickle.load(bytes: scalar, path: "x.pt").tensorValue?.float32().scalars == [11])
  }

  @Test(
    "sizes that do not fit the storage or the file are refused",
    arguments: [
      // (numel, offset, size, stride, storage elements)
      (12, 0, [13], [1], 12), (12, 12, [1], [1], 12), (12, 0, [4, 4], [4, 1], 12),
      (13, 0, [12], [1], 12), (1, 0, [255, 255, 255], [0, 0, 0], 1), (12, 0, [2], [], 12),
    ] as [(UInt8, UInt8, [UInt8], [UInt8], Int)])
  func badViews(numel: UInt8, offset: UInt8, size: [UInt8], stride: [UInt8], elements: Int) {
    let storage = [UInt8](repeating: 0, count: 4 * elements)
    let bytes = torchArchive(
      tensorPickle(numel: numel, offset: offset, size: size, stride: stride),
      storages: ["0": storage])
    let error = refusal { _ = try TorchPickle.load(bytes: bytes, path: "x.pt") }
    guard case .malformedTorchFile = error else {
      Issue.record("\(String(describing: error))")
      return
    }
  }

  @Test("deep nesting, self-reference and shared-reference bombs end in an error, not a crash")
  func bombs() {
    let deep: [UInt8] = [0x80, 0x02, 0x29] + [UInt8](repeating: 0x85, count: 200_000) + [0x2E]
    let cycle: [UInt8] = [0x80, 0x02, 0x5D, 0x71, 0, 0x68, 0, 0x61, 0x2E]
    // Each level is a tuple of the previous one twice: 2^60 values if expanded.
    var shared: [UInt8] = [0x80, 0x02, 0x29, 0x71, 0]
    for _ in 0..<60 { shared += [0x68, 0, 0x68, 0, 0x86, 0x71, 0] }
    shared += [0x2E]
    let hugeString: [UInt8] = [0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0xFF, 0x61, 0x2E]
    let marks: [UInt8] = [0x80, 0x02] + [UInt8](repeating: 0x28, count: 100_000) + [0x2E]
    for pickle in [deep, cycle, shared, hugeString, marks] {
      let error = refusal { _ = try TorchPickle.load(bytes: torchArchive(pickle), path: "x.pt") }
      guard case .malformedTorchFile = error else {
        Issue.record("\(String(describing: error))")
        continue
      }
    }
  }

  @Test("archive problems: compressed, corrupt, big-endian, no data.pkl")
  func archiveProblems() {
    let pickle: [UInt8] = [0x80, 0x02, 0x4E, 0x2E]  // PROTO 2, NONE, STOP
    let deflated = zipArchive([("archive/data.pkl", pickle)], method: 8)
    var corrupt = torchArchive(pickle)
    corrupt[30 + "archive/data.pkl".utf8.count + 2] ^= 0xFF  // the NONE opcode
    let bigEndian = zipArchive([
      ("archive/data.pkl", pickle), ("archive/byteorder", Array("big".utf8)),
    ])
    let script = zipArchive([
      ("archive/data.pkl", pickle), ("archive/constants.pkl", pickle), ("archive/code/x.py", []),
    ])
    let cases = [
      (deflated, "compressed"), (corrupt, "CRC-32"), (bigEndian, "big-endian"),
      (script, "TorchScript"), (Array(torchArchive(pickle).dropLast(3)), "end of central"),
    ]
    for (bytes, expected) in cases {
      let error = refusal { _ = try TorchPickle.load(bytes: bytes, path: "x.pt") }
      #expect(error?.description.contains(expected) == true, "\(String(describing: error))")
    }
    #expect(refusal { _ = try TorchPickle.load(bytes: torchArchive(pickle), path: "x.pt") } == nil)
  }
}

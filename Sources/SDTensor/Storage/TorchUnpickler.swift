// The restricted pickle machine behind TorchPickle (the opcodes of CPython's Lib/pickle.py, as
// documented in Lib/pickletools.py). It knows the opcodes torch.save writes for a dict of tensors
// with protocols 2 to 5, and an allow-list of globals that it implements as data constructors:
// torch's tensor rebuilders, the storage classes (dtype tags in persistent ids), OrderedDict and
// torch.Size. Any other global is refused by name, before anything could use it; no opcode calls
// anything. Every length read from the file is checked against what is left of the pickle.

/// One value on the machine's stack or in its memo.
enum PickleNode {
  case none
  case bool(Bool)
  case int(Int)
  case float(Double)
  case string(String)
  case container(PickleContainer)
  case tensor(TorchTensor)
  case global(TorchGlobal)
  case storage(TorchStorage)
}

/// A tuple, list or dict. A class because pickle containers are shared and mutable: a dict
/// memoized before its SETITEMS is the same dict when fetched from the memo later.
final class PickleContainer {
  enum Kind { case tuple, list, dict }
  let kind: Kind
  /// The elements; for a dict, the values, with their keys in `keys`.
  var items: [PickleNode]
  var keys: [PickleNode] = []
  var positions: [PickleKey: Int] = [:]

  init(_ kind: Kind, _ items: [PickleNode] = []) {
    self.kind = kind
    self.items = items
  }
}

/// A dict key as Python compares them (`True == 1 == 1.0`).
enum PickleKey: Hashable {
  case none, int(Int), float(UInt64), string(String), tuple([PickleKey])
}

/// The globals a torch.save of tensors names; nothing else gets past GLOBAL.
enum TorchGlobal: Equatable {
  case rebuildTensor, rebuildParameter, rebuildParameterWithState, orderedDict, size
  /// `torch.FloatStorage` and its kin: never called, only a dtype tag in a persistent id.
  case storage(SafeTensorsDType)

  init?(_ name: String) {
    switch name {
    case "torch._utils._rebuild_tensor_v2": self = .rebuildTensor
    case "torch._utils._rebuild_parameter": self = .rebuildParameter
    case "torch._utils._rebuild_parameter_with_state": self = .rebuildParameterWithState
    case "collections.OrderedDict": self = .orderedDict
    case "torch.Size": self = .size
    default:
      guard let dtype = Self.storages[name] else { return nil }
      self = .storage(dtype)
    }
  }

  static let storages: [String: SafeTensorsDType] = [
    "torch.FloatStorage": .f32, "torch.HalfStorage": .f16, "torch.BFloat16Storage": .bf16,
    "torch.DoubleStorage": .f64, "torch.LongStorage": .i64, "torch.IntStorage": .i32,
    "torch.ShortStorage": .i16, "torch.CharStorage": .i8, "torch.ByteStorage": .u8,
    "torch.BoolStorage": .bool,
  ]
}

/// A storage named by a persistent id: its dtype, element count and bytes in the archive.
struct TorchStorage {
  let dtype: SafeTensorsDType
  let record: String
  let bytes: Range<Int>
  let count: Int
}

/// Runs one pickle; see the file comment.
struct TorchUnpickler {
  /// Deepest nesting of containers returned (a state dict nests 3 deep, an A1111 file 2).
  static let maximumDepth = 64

  let archive: ZipArchive
  let recordPrefix: String
  private let end: Int
  private var position: Int
  private var stack: [PickleNode] = []
  private var marks: [Int] = []
  private var memo: [Int: PickleNode] = [:]
  /// Every container made, emptied after the run so that cycles (a list holding itself) and long
  /// chains are freed one by one, without recursion.
  private var containers: [PickleContainer] = []
  var storages: [String: TorchStorage] = [:]
  /// Float32 elements still allowed: the file's size, so that stride-0 or repeated views of a
  /// small storage cannot make the reader allocate more than the file could hold.
  var elementBudget: Int
  /// Values still allowed in the result: a memoized container referenced twice is copied twice,
  /// so repeated references nested deep could otherwise grow without bound.
  var valueBudget: Int

  init(archive: ZipArchive, pickle: Range<Int>, recordPrefix: String) {
    self.archive = archive
    self.recordPrefix = recordPrefix
    position = pickle.lowerBound
    end = pickle.upperBound
    elementBudget = archive.bytes.count
    valueBudget = 4 * pickle.count + 4096
  }

  var path: String { archive.path }

  func malformed(_ reason: String) -> WeightError {
    .malformedTorchFile(path: path, reason: reason)
  }

  /// Runs the pickle to its STOP and returns the object.
  mutating func run() throws(WeightError) -> TorchValue {
    defer {
      for container in containers {
        container.items = []
        container.keys = []
        container.positions = [:]
      }
    }
    let start = position
    while true {
      let at = position - start
      let opcode = try byte()
      if opcode == 0x2E {  // STOP
        return try value(of: pop(at), depth: 0)
      }
      try execute(opcode, at: at)
    }
  }

  // MARK: reading the pickle

  private mutating func bytes(_ count: UInt64) throws(WeightError) -> Range<Int> {
    guard count <= UInt64(end - position) else {
      throw malformed("data.pkl ends in the middle of an opcode (needs \(count) more bytes)")
    }
    defer { position += Int(count) }
    return position..<(position + Int(count))
  }

  private mutating func byte() throws(WeightError) -> UInt8 {
    archive.bytes[try bytes(1).lowerBound]
  }

  /// A little-endian unsigned integer of `width` bytes.
  private mutating func unsigned(_ width: Int) throws(WeightError) -> UInt64 {
    let range = try bytes(UInt64(width))
    return range.reversed().reduce(0) { $0 << 8 | UInt64(archive.bytes[$1]) }
  }

  private mutating func text(_ count: UInt64, at: Int) throws(WeightError) -> String {
    let range = try bytes(count)
    guard let text = String(validating: archive.bytes[range], as: UTF8.self) else {
      throw malformed("the string at byte \(at) of data.pkl is not UTF-8")
    }
    return text
  }

  /// A newline-terminated name of GLOBAL or INST (Python identifiers and dots).
  private mutating func line(at: Int) throws(WeightError) -> String {
    var name: [UInt8] = []
    while true {
      let next = try byte()
      if next == 0x0A { break }
      guard (0x21...0x7E).contains(next), name.count < 256 else {
        throw malformed("the global named at byte \(at) of data.pkl is not a Python name")
      }
      name.append(next)
    }
    return String(decoding: name, as: UTF8.self)
  }

  // MARK: the stack

  private mutating func push(_ node: PickleNode) { stack.append(node) }

  private mutating func pop(_ at: Int) throws(WeightError) -> PickleNode {
    guard stack.count > (marks.last ?? 0) else {
      throw malformed("opcode at byte \(at) of data.pkl pops an empty stack")
    }
    return stack.removeLast()
  }

  private func top(_ at: Int) throws(WeightError) -> PickleNode {
    guard let last = stack.last, stack.count > (marks.last ?? 0) else {
      throw malformed("opcode at byte \(at) of data.pkl needs a value on the stack")
    }
    return last
  }

  /// The values pushed since the last MARK, which is removed.
  private mutating func popToMark(_ at: Int) throws(WeightError) -> [PickleNode] {
    guard let mark = marks.popLast() else {
      throw malformed("opcode at byte \(at) of data.pkl needs a MARK and there is none")
    }
    defer { stack.removeSubrange(mark...) }
    return Array(stack[mark...])
  }

  mutating func container(_ kind: PickleContainer.Kind, _ items: [PickleNode] = [])
    -> PickleNode
  {
    let made = PickleContainer(kind, items)
    containers.append(made)
    return .container(made)
  }

  private mutating func memoize(_ index: UInt64, at: Int) throws(WeightError) {
    memo[Int(index)] = try top(at)
  }

  private func fetch(_ index: UInt64, at: Int) throws(WeightError) -> PickleNode {
    guard let node = memo[Int(index)] else {
      throw malformed("opcode at byte \(at) of data.pkl fetches memo \(index), never stored")
    }
    return node
  }

  // MARK: opcodes

  private mutating func execute(_ opcode: UInt8, at: Int) throws(WeightError) {
    switch opcode {
    case 0x80:  // PROTO
      let version = try byte()
      guard version <= 5 else { throw malformed("pickle protocol \(version) is unknown") }
    case 0x95: _ = try bytes(8)  // FRAME: a length hint for buffered readers
    case 0x28: marks.append(stack.count)  // MARK
    case 0x7D: push(container(.dict))  // EMPTY_DICT
    case 0x5D: push(container(.list))  // EMPTY_LIST
    case 0x29: push(container(.tuple))  // EMPTY_TUPLE
    case 0x4E: push(.none)  // NONE
    case 0x88: push(.bool(true))  // NEWTRUE
    case 0x89: push(.bool(false))  // NEWFALSE
    case 0x4B: push(.int(Int(try unsigned(1))))  // BININT1
    case 0x4D: push(.int(Int(try unsigned(2))))  // BININT2
    case 0x4A: push(.int(Int(Int32(truncatingIfNeeded: try unsigned(4)))))  // BININT
    case 0x8A: push(.int(try long(at: at)))  // LONG1
    case 0x47:  // BINFLOAT: big-endian IEEE double
      let range = try bytes(8)
      push(.float(Double(bitPattern: range.reduce(0) { $0 << 8 | UInt64(archive.bytes[$1]) })))
    case 0x58: push(.string(try text(try unsigned(4), at: at)))  // BINUNICODE
    case 0x8C: push(.string(try text(try unsigned(1), at: at)))  // SHORT_BINUNICODE
    case 0x8D: push(.string(try text(try unsigned(8), at: at)))  // BINUNICODE8
    case 0x71: try memoize(try unsigned(1), at: at)  // BINPUT
    case 0x72: try memoize(try unsigned(4), at: at)  // LONG_BINPUT
    case 0x94: try memoize(UInt64(memo.count), at: at)  // MEMOIZE
    case 0x68: push(try fetch(try unsigned(1), at: at))  // BINGET
    case 0x6A: push(try fetch(try unsigned(4), at: at))  // LONG_BINGET
    case 0x74: push(container(.tuple, try popToMark(at)))  // TUPLE
    case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
      var items: [PickleNode] = []
      for _ in 0..<Int(opcode - 0x84) { items.insert(try pop(at), at: 0) }
      push(container(.tuple, items))
    case 0x73:  // SETITEM
      let value = try pop(at)
      let key = try pop(at)
      try setItems([key, value], at: at)
    // (The popped values are bound first: a non-mutating call would see `self` as it was
    // before its arguments were evaluated.)
    case 0x75:  // SETITEMS
      let pairs = try popToMark(at)
      try setItems(pairs, at: at)
    case 0x61:  // APPEND
      let item = try pop(at)
      try append([item], at: at)
    case 0x65:  // APPENDS
      let items = try popToMark(at)
      try append(items, at: at)
    case 0x63:  // GLOBAL
      let module = try line(at: at)
      push(.global(try global(module + "." + (try line(at: at)))))
    case 0x93:  // STACK_GLOBAL
      guard case .string(let name) = try pop(at), case .string(let module) = try pop(at) else {
        throw malformed("STACK_GLOBAL at byte \(at) of data.pkl is not given two strings")
      }
      push(.global(try global(module + "." + name)))
    case 0x52:  // REDUCE
      let arguments = try pop(at)
      push(try reduce(try pop(at), arguments, at: at))
    case 0x62:  // BUILD
      let state = try pop(at)
      try build(state, at: at)
    case 0x51: push(try persistentLoad(try pop(at), at: at))  // BINPERSID
    case 0x69:  // INST: names the class it calls; refuse it by that name
      let module = try line(at: at)
      let name = module + "." + (try line(at: at))
      guard TorchGlobal(name) != nil else { throw .refusedPickleGlobal(path: path, global: name) }
      throw refusedOpcode(opcode, at: at)
    default: throw refusedOpcode(opcode, at: at)
    }
  }

  private func refusedOpcode(_ opcode: UInt8, at: Int) -> WeightError {
    let name = Self.opcodeNames[opcode].map { "\($0) " } ?? ""
    return malformed(
      "opcode \(name)(0x\(String(opcode, radix: 16))) at byte \(at) of data.pkl is not one"
        + " torch.save writes for tensors; refusing it")
  }

  /// The other opcodes of pickle protocols 0–5, for the message that refuses them.
  private static let opcodeNames: [UInt8: String] = [
    0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT", 0x4C: "LONG",
    0x50: "PERSID", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING", 0x56: "UNICODE",
    0x64: "DICT", 0x67: "GET", 0x69: "INST", 0x6C: "LIST", 0x6F: "OBJ", 0x70: "PUT",
    0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x8B: "LONG4", 0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
    0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
  ]

  /// LONG1: a little-endian two's-complement integer of up to 255 bytes; 64 bits are read.
  private mutating func long(at: Int) throws(WeightError) -> Int {
    let width = Int(try byte())
    guard width <= 8 else {
      _ = try bytes(UInt64(width))
      throw malformed("the integer at byte \(at) of data.pkl is wider than 64 bits")
    }
    guard width > 0 else { return 0 }
    let raw = try unsigned(width)
    let shift = UInt64(64 - 8 * width)
    return Int(truncatingIfNeeded: Int64(bitPattern: raw << shift) >> Int64(shift))
  }

  private func global(_ name: String) throws(WeightError) -> TorchGlobal {
    guard let global = TorchGlobal(name) else {
      throw .refusedPickleGlobal(path: path, global: name)
    }
    return global
  }

  private func setItems(_ pairs: [PickleNode], at: Int) throws(WeightError) {
    guard case .container(let dict) = try top(at), dict.kind == .dict else {
      throw malformed("SETITEM(S) at byte \(at) of data.pkl on something that is not a dict")
    }
    guard pairs.count % 2 == 0 else {
      throw malformed("SETITEMS at byte \(at) of data.pkl has a key without a value")
    }
    for pair in stride(from: 0, to: pairs.count, by: 2) {
      let key = try hashKey(pairs[pair], nested: false, at: at)
      if let existing = dict.positions[key] {
        dict.items[existing] = pairs[pair + 1]
      } else {
        dict.positions[key] = dict.items.count
        dict.keys.append(pairs[pair])
        dict.items.append(pairs[pair + 1])
      }
    }
  }

  private func hashKey(_ node: PickleNode, nested: Bool, at: Int) throws(WeightError)
    -> PickleKey
  {
    switch node {
    case .none: return .none
    case .bool(let flag): return .int(flag ? 1 : 0)
    case .int(let number): return .int(number)
    case .float(let number):
      if let exact = Int(exactly: number) { return .int(exact) }
      return .float(number.bitPattern)
    case .string(let text): return .string(text)
    case .container(let tuple) where tuple.kind == .tuple && !nested:
      var parts: [PickleKey] = []
      for item in tuple.items { parts.append(try hashKey(item, nested: true, at: at)) }
      return .tuple(parts)
    default:
      throw malformed("a dict key at byte \(at) of data.pkl is not a string, number or flat tuple")
    }
  }

  private func append(_ items: [PickleNode], at: Int) throws(WeightError) {
    guard case .container(let list) = try top(at), list.kind == .list else {
      throw malformed("APPEND(S) at byte \(at) of data.pkl on something that is not a list")
    }
    list.items += items
  }

  /// BUILD sets an object's attributes from a state. torch.save writes it for a state dict, an
  /// OrderedDict whose `_metadata` attribute records module versions; those are dropped.
  private func build(_ state: PickleNode, at: Int) throws(WeightError) {
    guard case .container(let object) = try top(at), object.kind == .dict else {
      throw malformed(
        "BUILD at byte \(at) of data.pkl sets the state of something not an OrderedDict")
    }
    switch state {
    case .none: return
    case .container(let fields) where fields.kind != .list: return
    default: throw malformed("BUILD at byte \(at) of data.pkl is given a state that is not a dict")
    }
  }
}

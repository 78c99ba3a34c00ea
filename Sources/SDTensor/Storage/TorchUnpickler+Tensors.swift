// The allow-listed callables of TorchUnpickler as data constructors: torch/serialization.py's
// persistent_load (a storage from the archive), torch/_utils.py's _rebuild_tensor_v2 and
// _rebuild_parameter (a tensor view of it), OrderedDict() and torch.Size; and the conversion of
// the finished object into a TorchValue.

extension TorchUnpickler {
  /// REDUCE: `callable(*arguments)` for the allowed globals, built as data.
  mutating func reduce(_ callable: PickleNode, _ arguments: PickleNode, at: Int)
    throws(WeightError) -> PickleNode
  {
    guard case .global(let global) = callable else {
      throw malformed("REDUCE at byte \(at) of data.pkl calls a value that is not a function")
    }
    guard case .container(let tuple) = arguments, tuple.kind == .tuple else {
      throw malformed("REDUCE at byte \(at) of data.pkl is not given an argument tuple")
    }
    let arguments = tuple.items
    switch global {
    case .rebuildTensor:
      // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
      // backward_hooks[, metadata]); gradients and hooks mean nothing to inference.
      guard arguments.count == 6 || arguments.count == 7,
        case .storage(let storage) = arguments[0], case .int(let offset) = arguments[1],
        let shape = integers(arguments[2]), let strides = integers(arguments[3])
      else {
        throw malformed(
          "_rebuild_tensor_v2 at byte \(at) of data.pkl is not given (storage, offset, size,"
            + " stride, ...)")
      }
      return .tensor(try rebuild(storage, offset: offset, shape: shape, strides: strides, at: at))
    case .rebuildParameter, .rebuildParameterWithState:
      // _rebuild_parameter(data, requires_grad, backward_hooks[, state]): an nn.Parameter is
      // its tensor here.
      guard arguments.count == (global == .rebuildParameter ? 3 : 4),
        case .tensor = arguments[0]
      else {
        throw malformed("_rebuild_parameter at byte \(at) of data.pkl is not given a tensor")
      }
      return arguments[0]
    case .orderedDict:
      guard arguments.isEmpty else {
        throw malformed(
          "OrderedDict at byte \(at) of data.pkl is given arguments; torch passes none")
      }
      return container(.dict)
    case .size:
      guard arguments.count == 1, let extents = integers(arguments[0]) else {
        throw malformed("torch.Size at byte \(at) of data.pkl is not given a tuple of integers")
      }
      return container(.tuple, extents.map { .int($0) })
    case .storage:
      throw malformed(
        "a storage class is called at byte \(at) of data.pkl; torch.save only names one in a"
          + " persistent id")
    }
  }

  private func integers(_ node: PickleNode) -> [Int]? {
    guard case .container(let tuple) = node, tuple.kind == .tuple else { return nil }
    var values: [Int] = []
    for item in tuple.items {
      guard case .int(let value) = item else { return nil }
      values.append(value)
    }
    return values
  }

  /// BINPERSID: the persistent id torch.save writes for a storage,
  /// `('storage', torch.<Type>Storage, key, location, element count)`; its bytes are the entry
  /// `<name>/data/<key>`. The location ('cpu', 'cuda:0') is ignored: everything loads to the CPU.
  mutating func persistentLoad(_ id: PickleNode, at: Int) throws(WeightError) -> PickleNode {
    guard case .container(let tuple) = id, tuple.kind == .tuple, tuple.items.count == 5,
      case .string("storage") = tuple.items[0],
      case .global(.storage(let dtype)) = tuple.items[1],
      case .string(let key) = tuple.items[2], case .string = tuple.items[3],
      case .int(let count) = tuple.items[4], count >= 0
    else {
      throw malformed(
        "the persistent id at byte \(at) of data.pkl is not ('storage', torch.<Type>Storage, key,"
          + " location, size)")
    }
    let record = recordPrefix + key
    if let known = storages[key] {
      guard known.dtype == dtype, known.count == count else {
        throw malformed("storage \(record) is named with two different dtypes or sizes")
      }
      return .storage(known)
    }
    guard archive.contains(record) else {
      throw malformed("a tensor at byte \(at) of data.pkl uses storage \(record), which is missing")
    }
    let range = try archive.dataRange(of: record)
    let (size, overflow) = count.multipliedReportingOverflow(by: dtype.size)
    guard !overflow, size == range.count else {
      throw malformed(
        "storage \(record) holds \(range.count) bytes, not the \(count) \(dtype.rawValue) elements"
          + " the pickle declares")
    }
    let storage = TorchStorage(dtype: dtype, record: record, bytes: range, count: count)
    storages[key] = storage
    return .storage(storage)
  }

  /// The tensor `storage[offset + Σ index_i · strides_i]` of `shape`, copied row-major (so
  /// transposed, sliced and expanded views come out as torch shows them).
  private mutating func rebuild(
    _ storage: TorchStorage, offset: Int, shape: [Int], strides: [Int], at: Int
  ) throws(WeightError) -> TorchTensor {
    func fail(_ reason: String) -> WeightError {
      malformed("the tensor at byte \(at) of data.pkl (storage \(storage.record)) \(reason)")
    }
    guard shape.count == strides.count, shape.count <= Self.maximumDepth else {
      throw fail("has size \(shape) and stride \(strides)")
    }
    guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
      throw fail("has a negative size, stride or offset")
    }
    var count = 1
    var last = offset
    for (extent, stride) in zip(shape, strides) {
      let (product, overflow) = count.multipliedReportingOverflow(by: extent)
      guard !overflow else { throw fail("has size \(shape), more elements than can exist") }
      count = product
      guard extent > 0 else { continue }
      let (step, stepOverflow) = (extent - 1).multipliedReportingOverflow(by: stride)
      let (sum, sumOverflow) = last.addingReportingOverflow(step)
      guard !stepOverflow, !sumOverflow else { throw fail("has stride \(strides) out of range") }
      last = sum
    }
    guard count == 0 || last < storage.count else {
      throw fail(
        "with size \(shape), stride \(strides) and offset \(offset) reaches element \(last) of a"
          + " storage of \(storage.count)")
    }
    guard storage.dtype.isReadable else {
      return TorchTensor(
        dtype: storage.dtype, shape: shape, record: storage.record, file: path, elements: nil)
    }
    guard count <= elementBudget else {
      throw fail(
        "has \(count) elements, more than a \(archive.bytes.count)-byte file holds (its views"
          + " repeat the stored data too often)")
    }
    elementBudget -= count
    let elements = Self.gather(
      archive.bytes, storage: storage, offset: offset, shape: shape, strides: strides, count: count)
    return TorchTensor(
      dtype: storage.dtype, shape: shape, record: storage.record, file: path, elements: elements)
  }

  /// Reads a validated view element by element, widening F16 and BF16 (the top half of an F32)
  /// to Float32. Every index read was bounds-checked by `rebuild`; the odometer's running
  /// offset wraps (`&+`) only on its way past the last element, where it is not read.
  private static func gather(
    _ bytes: [UInt8], storage: TorchStorage, offset: Int, shape: [Int], strides: [Int], count: Int
  ) -> Tensor {
    let dtype = storage.dtype
    let base = storage.bytes.lowerBound
    return bytes.withUnsafeBytes { raw in
      func element(_ index: Int) -> Float {
        let at = base + index * dtype.size
        switch dtype {
        case .f16:
          let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self))
          return Float(Float16(bitPattern: bits))
        case .bf16:
          let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self))
          return Float(bitPattern: UInt32(bits) << 16)
        default:
          let bits = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self))
          return Float(bitPattern: bits)
        }
      }
      return Tensor(shape: shape) { out in
        var index = [Int](repeating: 0, count: shape.count)
        var source = offset
        for i in 0..<count {
          out[i] = element(source)
          var axis = shape.count - 1
          while axis >= 0 {
            index[axis] += 1
            source &+= strides[axis]
            if index[axis] < shape[axis] { break }
            source &-= strides[axis] &* shape[axis]
            index[axis] = 0
            axis -= 1
          }
        }
      }
    }
  }

  /// The finished object as a TorchValue, nested at most `maximumDepth` deep.
  mutating func value(of node: PickleNode, depth: Int) throws(WeightError) -> TorchValue {
    guard valueBudget > 0 else {
      throw malformed("data.pkl refers to its containers so often that the object would not fit")
    }
    valueBudget -= 1
    switch node {
    case .none: return .null
    case .bool(let flag): return .bool(flag)
    case .int(let number): return .int(number)
    case .float(let number): return .float(number)
    case .string(let text): return .string(text)
    case .tensor(let tensor): return .tensor(tensor)
    case .global:
      throw malformed("the object holds a Python class or function where data belongs")
    case .storage:
      throw malformed("the object holds a bare storage where a tensor belongs")
    case .container(let container):
      guard depth < Self.maximumDepth else {
        throw malformed(
          "containers nest deeper than \(Self.maximumDepth) levels (or one holds itself)")
      }
      var items: [TorchValue] = []
      for item in container.items { items.append(try value(of: item, depth: depth + 1)) }
      switch container.kind {
      case .tuple: return .tuple(items)
      case .list: return .list(items)
      case .dict:
        var keys: [TorchValue] = []
        for key in container.keys { keys.append(try value(of: key, depth: depth + 1)) }
        return .dict(Array(zip(keys, items)).map { (key: $0.0, value: $0.1) })
      }
    }
  }
}

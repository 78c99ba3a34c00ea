// Reading the tensors of a torch.save file (`.pt`, `.bin`, `.pth`) without running anything. The
// file is a ZIP archive (torch ≥ 1.6): `<name>/data.pkl` pickles the saved object, and each
// tensor's storage is the entry `<name>/data/<key>`, found through a persistent id. The pickle
// goes through TorchUnpickler, a pickle machine that knows only the opcodes torch.save writes and
// the few torch globals a saved tensor needs; it builds data, never calls Python.

/// A Python value from a torch file: what `torch.load` would return, with tensors in Float32.
public indirect enum TorchValue: Sendable {
  /// Python's `None` (named as in JSONValue, so that it never reads as `Optional.none`).
  case null
  /// `True` or `False`.
  case bool(Bool)
  /// An `int` that fits 64 bits (wider ones are refused).
  case int(Int)
  /// A `float`.
  case float(Double)
  /// A `str`.
  case string(String)
  /// A `list`.
  case list([TorchValue])
  /// A `tuple` (also a `torch.Size`).
  case tuple([TorchValue])
  /// A `dict` or `collections.OrderedDict`, in insertion order.
  case dict([(key: TorchValue, value: TorchValue)])
  /// A `torch.Tensor` or `nn.Parameter`.
  case tensor(TorchTensor)

  /// The value under string key `key` of a dict; nil for other values and absent keys.
  public subscript(key: String) -> TorchValue? {
    guard case .dict(let entries) = self else { return nil }
    return entries.first { $0.key.stringValue == key }?.value
  }

  /// The entries of a dict, nil for other values.
  public var dictEntries: [(key: TorchValue, value: TorchValue)]? {
    if case .dict(let entries) = self { return entries }
    return nil
  }

  /// The text of a string, nil for other values.
  public var stringValue: String? {
    if case .string(let text) = self { return text }
    return nil
  }

  /// The number of an int, nil for other values.
  public var intValue: Int? {
    if case .int(let number) = self { return number }
    return nil
  }

  /// The tensor of a tensor value, nil for other values.
  public var tensorValue: TorchTensor? {
    if case .tensor(let tensor) = self { return tensor }
    return nil
  }
}

/// A tensor of a torch file: its dtype and shape, and its elements in Float32 when the dtype is
/// a float one. Strided and offset tensors (views, transposes) are materialised row-major.
public struct TorchTensor: Sendable {
  /// The element type of the storage (`torch.FloatStorage` is `.f32`, ...).
  public let dtype: SafeTensorsDType
  /// The extents, outermost first (`[]` for a 0-d tensor).
  public let shape: [Int]
  /// The archive entry holding the storage, for messages.
  public let record: String
  /// The file path, for messages.
  public let file: String
  let elements: Tensor?

  /// The elements widened to Float32, `shape` as stored.
  /// - Throws: `WeightError.unsupportedDType` when the dtype is not F32, F16 or BF16.
  public func float32() throws(WeightError) -> Tensor {
    guard let elements else {
      throw .unsupportedDType(key: record, dtype: dtype.rawValue, file: file)
    }
    return elements
  }
}

/// Loads torch.save files safely.
public enum TorchPickle {
  /// Largest file read by default: textual-inversion files are kilobytes; a learned_embeds.bin
  /// saved as a view of CLIP's token table carries the table, 150 MB.
  public static let defaultMaximumBytes = 1 << 30

  /// The object saved in the torch file at `path`.
  /// - Throws: `WeightError.unreadableFile` when it cannot be read or is larger than
  ///   `maximumBytes`; `.refusedPickleGlobal` naming a Python callable that is not a tensor
  ///   constructor; `.malformedTorchFile` for the legacy (torch < 1.6) format, a damaged archive,
  ///   an opcode torch does not write, or tensor sizes that do not fit their storage.
  public static func load(contentsOf path: String, maximumBytes: Int = defaultMaximumBytes)
    throws(WeightError) -> TorchValue
  {
    try load(bytes: RegularFile.read(path, maximumBytes: maximumBytes), path: path)
  }

  /// The object saved in the torch file whose contents are `bytes`; `path` names it in errors.
  /// - Throws: as `load(contentsOf:maximumBytes:)`.
  public static func load(bytes: [UInt8], path: String) throws(WeightError) -> TorchValue {
    guard ZipArchive.looksLikeZip(bytes) else {
      // torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes pickles
      // back to back: a magic number, the protocol, system info, the object, then raw storages.
      let reason =
        bytes.first == 0x80
        ? "it is a bare pickle stream, not a ZIP archive: torch's legacy format (torch.save before"
          + " 1.6, or _use_new_zipfile_serialization=False) is not read; load it in Python and"
          + " save it again with a current torch, or convert it to safetensors"
        : "it is not a ZIP archive (torch.save writes one since torch 1.6)"
      throw .malformedTorchFile(path: path, reason: reason)
    }
    let archive = try ZipArchive(bytes: bytes, path: path)
    // torch names the top folder after the file it wrote ("archive" for a buffer) and reads
    // every record under the first entry's folder.
    guard let first = archive.entries.first, let slash = first.name.firstIndex(of: "/") else {
      throw .malformedTorchFile(path: path, reason: "the archive has no top-level folder")
    }
    let prefix = String(first.name[...slash])
    // torch.load tells the two apart the same way (serialization.py, _is_torchscript_zip).
    guard !archive.contains(prefix + "constants.pkl") else {
      throw .malformedTorchFile(
        path: path, reason: "it is a TorchScript archive (torch.jit.save), not a torch.save file")
    }
    guard archive.contains(prefix + "data.pkl") else {
      throw .malformedTorchFile(
        path: path, reason: "the archive has no \(prefix)data.pkl: not a torch.save file")
    }
    if archive.contains(prefix + "byteorder") {
      let range = try archive.dataRange(of: prefix + "byteorder")
      guard bytes[range].elementsEqual("little".utf8) else {
        throw .malformedTorchFile(
          path: path,
          reason: "its tensors are stored \(String(decoding: bytes[range], as: UTF8.self))-endian;"
            + " only little-endian files are read")
      }
    }
    let pickle = try archive.dataRange(of: prefix + "data.pkl")
    var machine = TorchUnpickler(archive: archive, pickle: pickle, recordPrefix: prefix + "data/")
    return try machine.run()
  }
}

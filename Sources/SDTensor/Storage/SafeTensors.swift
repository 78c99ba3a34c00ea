// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw data.
// The reader memory-maps the file and validates the whole header before any tensor is touched;
// tensors are converted to Float32 when read (F16 and BF16 checkpoints are widened at load).

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The element types a safetensors file may declare. Every one is accepted in a header (released
/// checkpoints carry I64 buffers such as `position_ids`); only the float ones can be read.
public enum SafeTensorsDType: String, Sendable {
  /// Floats: IEEE 64, 32 and 16 bits, and bfloat16; all but F64 can be read.
  case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
  /// Signed integers of 64 to 8 bits.
  case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
  /// Unsigned integers of 64 to 8 bits, and one-byte booleans.
  case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
  /// 8-bit floats (4 exponent + 3 mantissa bits, or 5 + 2), as in FP8 checkpoints.
  case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

  /// Bytes per element.
  public var size: Int {
    switch self {
    case .f64, .i64, .u64: return 8
    case .f32, .i32, .u32: return 4
    case .f16, .bf16, .i16, .u16: return 2
    case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
    }
  }

  /// Whether `read` can widen this dtype to Float32.
  public var isReadable: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// Where one tensor lives in the file, as declared by the header (already validated).
public struct SafeTensorsEntry: Sendable, Equatable {
  /// The element type the header declares.
  public let dtype: SafeTensorsDType
  /// The extents the header declares, outermost first (row-major data).
  public let shape: [Int]
  /// Byte range inside the data section.
  public let dataRange: Range<Int>
}

/// A validated, memory-mapped safetensors file. Immutable after `init`; the mapping is released
/// when the last reference goes away.
public final class SafeTensorsFile: @unchecked Sendable {
  // @unchecked: every stored property is a `let` set in init; the mapped memory is only read.

  /// The file path, used in error messages.
  public let path: String
  /// The tensors in the file by name.
  public let entries: [String: SafeTensorsEntry]
  /// The `__metadata__` strings of the header (empty when absent).
  public let metadata: [String: String]
  private let mapping: UnsafeRawPointer?
  private let mappedLength: Int
  private let dataStart: Int
  /// Kept open so that `checkUnchanged` sees the mapped file itself, not whatever now has its name.
  private let descriptor: Int32
  /// The modification time at opening.
  private let modified: timespec

  /// Names of all tensors, sorted.
  public var names: [String] { entries.keys.sorted() }

  /// Opens and validates `path`.
  /// - Throws: `WeightError.unreadableFile` when it cannot be opened or mapped,
  ///   `WeightError.malformedFile` for a truncated file, bad header, out-of-range or overlapping
  ///   offsets, or a shape that does not match the byte length; `WeightError.unsupportedDType`.
  public init(path: String) throws(WeightError) {
    self.path = path
    let (fd, length) = try RegularFile.open(path)
    guard length >= 8 else {
      close(fd)
      throw .malformedFile(
        path: path, reason: "file is \(length) bytes, shorter than the 8-byte header length")
    }
    guard let base = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
      let reason = "mmap failed: \(String(cString: strerror(errno)))"
      close(fd)
      throw .unreadableFile(path: path, reason: reason)
    }
    let raw = UnsafeRawPointer(base)
    do {
      let parsed = try SafeTensorsFile.parseHeader(raw, length: length, path: path)
      (entries, metadata, dataStart) = parsed
    } catch {
      munmap(base, length)
      close(fd)
      throw error
    }
    mapping = raw
    mappedLength = length
    descriptor = fd
    modified = Self.status(of: fd)?.st_mtim ?? timespec()
  }

  deinit {
    if let mapping { munmap(UnsafeMutableRawPointer(mutating: mapping), mappedLength) }
    close(descriptor)
  }

  private static func status(of fd: Int32) -> stat? {
    var info = stat()
    return fstat(fd, &info) == 0 ? info : nil
  }

  /// Throws if the mapped file was cut short or modified since it was opened. Weights used in
  /// place are read from the mapping again after their pages are dropped; pages past a shortened
  /// end would kill the process with SIGBUS, and rewritten ones would change the weights halfway
  /// through a run. The pipeline checks before each phase and each step. A file replaced by a
  /// new one under its name is no problem: the mapping keeps the old one.
  /// - Throws: `WeightError.unreadableFile` naming the file and what changed.
  public func checkUnchanged() throws(WeightError) {
    guard let now = Self.status(of: descriptor) else {
      throw .unreadableFile(path: path, reason: String(cString: strerror(errno)))
    }
    if Int(now.st_size) < mappedLength {
      throw .unreadableFile(
        path: path,
        reason:
          "it was cut from \(mappedLength) to \(now.st_size) bytes while in use; its weights are gone"
      )
    }
    if now.st_mtim.tv_sec != modified.tv_sec || now.st_mtim.tv_nsec != modified.tv_nsec {
      throw .unreadableFile(
        path: path,
        reason: "it was modified while in use (replace a checkpoint by renaming a new file over it)"
      )
    }
  }

  /// Largest header we accept. The reference implementation allows 100 MB, but a 95 MB header of
  /// empty entries took 20 s and 1 GB to parse; the largest checkpoints (SDXL single files,
  /// ~2,500 tensors) have headers under 0.5 MB.
  static let maximumHeaderSize = 16 << 20
  /// Most tensors a file may hold (an SDXL single file has ~2,500, a LoRA for it ~2,000).
  static let maximumEntries = 65_536

  private static func parseHeader(
    _ raw: UnsafeRawPointer, length: Int, path: String
  ) throws(WeightError) -> ([String: SafeTensorsEntry], [String: String], Int) {
    let declared = raw.loadUnaligned(as: UInt64.self).littleEndian
    guard declared <= UInt64(length - 8) else {
      throw .malformedFile(
        path: path, reason: "header length \(declared) exceeds the file size \(length)")
    }
    guard declared <= UInt64(maximumHeaderSize) else {
      throw .malformedFile(
        path: path,
        reason:
          "header length \(declared) is over the \(maximumHeaderSize >> 20) MB a checkpoint needs")
    }
    let headerSize = Int(declared)
    let header = UnsafeRawBufferPointer(start: raw + 8, count: headerSize)
    let json: JSONValue
    do { json = try JSONValue.parse(header) } catch {
      throw .malformedFile(path: path, reason: "header: \(error)")
    }
    guard let members = json.objectValue else {
      throw .malformedFile(path: path, reason: "header is not a JSON object")
    }
    guard members.count <= maximumEntries + 1 else {
      throw .malformedFile(
        path: path, reason: "\(members.count) entries, more than the \(maximumEntries) read")
    }
    let dataStart = 8 + headerSize
    let dataSize = length - dataStart
    var entries: [String: SafeTensorsEntry] = [:]
    var metadata: [String: String] = [:]
    for (name, value) in members {
      if name == "__metadata__" {
        guard let fields = value.objectValue else {
          throw .malformedFile(path: path, reason: "__metadata__ is not an object")
        }
        for (key, field) in fields {
          guard let text = field.stringValue else {
            throw .malformedFile(path: path, reason: "__metadata__ value '\(key)' is not a string")
          }
          metadata[key] = text
        }
        continue
      }
      entries[name] = try entry(name, value, dataSize: dataSize, path: path)
    }
    // Tensors may not share bytes (the format requires a dense, disjoint layout).
    let ranges = entries.sorted { $0.value.dataRange.lowerBound < $1.value.dataRange.lowerBound }
    for (previous, next) in zip(ranges, ranges.dropFirst())
    where next.value.dataRange.lowerBound < previous.value.dataRange.upperBound {
      throw .malformedFile(
        path: path,
        reason: "tensors '\(previous.key)' and '\(next.key)' overlap in the data section")
    }
    return (entries, metadata, dataStart)
  }

  private static func entry(
    _ name: String, _ value: JSONValue, dataSize: Int, path: String
  ) throws(WeightError) -> SafeTensorsEntry {
    guard let dtypeName = value["dtype"]?.stringValue else {
      throw .malformedFile(path: path, reason: "tensor '\(name)' has no dtype string")
    }
    guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
      throw .unsupportedDType(key: name, dtype: dtypeName, file: path)
    }
    guard let shapeValues = value["shape"]?.arrayValue else {
      throw .malformedFile(path: path, reason: "tensor '\(name)' has no shape array")
    }
    var shape: [Int] = []
    var elements = 1
    for extentValue in shapeValues {
      guard let extent = extentValue.intValue, extent >= 0 else {
        throw .malformedFile(path: path, reason: "tensor '\(name)' has a bad extent in its shape")
      }
      let (product, overflow) = elements.multipliedReportingOverflow(by: extent)
      guard !overflow, product <= dataSize else {
        throw .malformedFile(
          path: path,
          reason:
            "tensor '\(name)' shape \(shapeValues.compactMap(\.intValue)) is larger than the file")
      }
      elements = product
      shape.append(extent)
    }
    guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
      let begin = offsets[0].intValue, let end = offsets[1].intValue
    else {
      throw .malformedFile(path: path, reason: "tensor '\(name)' has no [begin, end] data_offsets")
    }
    guard begin >= 0, begin <= end, end <= dataSize else {
      throw .malformedFile(
        path: path,
        reason:
          "tensor '\(name)' offsets [\(begin), \(end)] are outside the \(dataSize)-byte data section"
      )
    }
    guard end - begin == elements * dtype.size else {
      throw .malformedFile(
        path: path,
        reason:
          "tensor '\(name)' of shape \(shape) and dtype \(dtypeName) needs \(elements * dtype.size) bytes, offsets give \(end - begin)"
      )
    }
    return SafeTensorsEntry(dtype: dtype, shape: shape, dataRange: begin..<end)
  }

  /// Reads tensor `name`, widened to Float32.
  /// - Throws: `WeightError.missingTensor` when absent, `WeightError.unsupportedDType` when it is
  ///   not a float tensor.
  public func tensor(_ name: String) throws(WeightError) -> Tensor {
    guard let entry = entries[name] else { throw .missingTensor(key: name, file: path) }
    return try read(entry, name: name)
  }

  /// Reads the data of a validated entry called `name`, widened to Float32.
  /// - Throws: `WeightError.unsupportedDType` when it is not a float tensor.
  public func read(_ entry: SafeTensorsEntry, name: String) throws(WeightError) -> Tensor {
    guard entry.dtype.isReadable else {
      throw .unsupportedDType(key: name, dtype: entry.dtype.rawValue, file: path)
    }
    let count = entry.shape.reduce(1, *)
    guard let mapping else { return Tensor(zeros: entry.shape) }
    let source = mapping + dataStart + entry.dataRange.lowerBound
    return Tensor(shape: entry.shape) { out in
      guard let destination = out.baseAddress else { return }
      switch entry.dtype {
      case .f32:
        UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
      case .f16:
        for i in 0..<count {
          destination[i] = Float(
            Float16(bitPattern: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        }
      case .bf16:
        // bfloat16 is the top half of a float32.
        for i in 0..<count {
          let bits = UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
          destination[i] = Float(bitPattern: bits)
        }
      default:
        break  // excluded by the isReadable guard above
      }
      releasePages(of: entry)
    }
  }

  /// Drops the file pages of `entry` from this process's resident memory: once its data has been
  /// copied out, or when weights used in place (`mappedData`) are not needed for a while.
  /// Touched pages of a file mapping count as resident until unmapped, so without this, loading a
  /// checkpoint would hold the whole file on top of the copies made from it (an fp32 UNet file is
  /// 3.4 GB). Pages shared with a neighbouring tensor are kept; the next access to the entry maps
  /// its pages in again from the file (from the page cache, usually).
  func releasePages(of entry: SafeTensorsEntry) {
    guard let mapping else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = Int(bitPattern: mapping) + dataStart + entry.dataRange.lowerBound
    let end = Int(bitPattern: mapping) + dataStart + entry.dataRange.upperBound
    let first = (start + page - 1) / page * page
    let last = end / page * page
    guard last > first, let address = UnsafeMutableRawPointer(bitPattern: first) else { return }
    _ = madvise(address, last - first, MADV_DONTNEED)
  }
}

extension SafeTensorsFile {
  /// The data of `entry` where it lies in the file mapping, without a copy, when it is stored
  /// as `dtype` and aligned for `Element` (safetensors writers align the data section to 8
  /// bytes); nil otherwise. The pages are read from the file on first use, and may be dropped
  /// again with `releasePages(of:)`. Valid as long as this file object lives.
  func mappedData<Element>(
    of entry: SafeTensorsEntry, as dtype: SafeTensorsDType, _: Element.Type
  ) -> UnsafePointer<Element>? {
    guard entry.dtype == dtype, dtype.size == MemoryLayout<Element>.size, let mapping else {
      return nil
    }
    let source = mapping + dataStart + entry.dataRange.lowerBound
    guard Int(bitPattern: source) % MemoryLayout<Element>.alignment == 0 else { return nil }
    return source.assumingMemoryBound(to: Element.self)
  }

  /// Reads the data of a validated entry as IEEE half-precision bit patterns: F16 as stored,
  /// F32 and BF16 rounded to the nearest half.
  /// - Throws: `WeightError.unsupportedDType` when it is not a float tensor.
  public func readHalf(_ entry: SafeTensorsEntry, name: String) throws(WeightError) -> [UInt16] {
    let count = entry.shape.reduce(1, *)
    guard entry.dtype == .f16, let mapping else {
      return try read(entry, name: name).scalars.map { Float16($0).bitPattern }
    }
    let source = mapping + dataStart + entry.dataRange.lowerBound
    let bits = (0..<count).map { source.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) }
    releasePages(of: entry)
    return bits
  }
}

/// Writes safetensors files (F32 data), atomically: a temporary file beside the target is
/// written and renamed over it, so a failed write leaves no partial file.
public enum SafeTensorsWriter {
  /// Writes `tensors` and `metadata` to `path`.
  /// - Throws: `WeightError.unwritableFile` naming the path and the system's reason.
  public static func write(
    _ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String
  ) throws(WeightError) {
    var header: [String: JSONValue] = [:]
    var offset = 0
    let names = tensors.keys.sorted()
    for name in names {
      guard let tensor = tensors[name] else { continue }
      let bytes = tensor.count * 4
      header[name] = .object([
        "dtype": .string("F32"), "shape": .array(tensor.shape.map { .integer($0) }),
        "data_offsets": .array([.integer(offset), .integer(offset + bytes)]),
      ])
      offset += bytes
    }
    if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
    var headerBytes = Array(JSONValue.object(header).serialized.utf8)
    // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
    while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
    var file: [UInt8] = []
    file.reserveCapacity(8 + headerBytes.count + offset)
    withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
    file.append(contentsOf: headerBytes)
    for name in names {
      tensors[name]?.scalars.withUnsafeBytes { file.append(contentsOf: $0) }
    }
    try AtomicFile.write(file, to: path)
  }
}

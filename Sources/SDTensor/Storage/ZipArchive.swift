// The part of the ZIP format (PKWARE APPNOTE 6.3.10) a torch.save archive uses: the end of
// central directory record and its ZIP64 form, the central directory, and the local headers that
// say where each entry's data begins. torch writes every entry STORED (uncompressed) with a data
// descriptor after the data (flag bit 3), so sizes come from the central directory only.

/// A validated ZIP archive held in memory: every entry's data range lies inside the bytes.
struct ZipArchive {
  /// One entry of the central directory.
  struct Entry {
    let name: String
    /// 0 = stored, 8 = deflated, ...
    let method: UInt16
    let flags: UInt16
    let crc32: UInt32
    let compressedSize: Int
    let uncompressedSize: Int
    /// Where the entry's bytes begin in the archive (after its local header).
    let dataStart: Int
  }

  /// The file path, used in error messages.
  let path: String
  let bytes: [UInt8]
  /// The entries in central-directory order.
  let entries: [Entry]
  private let index: [String: Int]

  /// Whether `bytes` start as a ZIP archive does (a local file header).
  static func looksLikeZip(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 4 && bytes.uint32(at: 0) == localHeaderSignature
  }

  private static let localHeaderSignature: UInt32 = 0x0403_4B50
  private static let centralHeaderSignature: UInt32 = 0x0201_4B50
  private static let endSignature: UInt32 = 0x0605_4B50
  private static let zip64EndSignature: UInt32 = 0x0606_4B50
  private static let zip64LocatorSignature: UInt32 = 0x0706_4B50

  /// Parses the central directory of `bytes` and checks every entry's local header and range.
  /// - Throws: `WeightError.malformedTorchFile` for anything that is not a consistent,
  ///   single-disk archive.
  init(bytes: [UInt8], path: String) throws(WeightError) {
    self.path = path
    self.bytes = bytes
    func fail(_ reason: String) -> WeightError { .malformedTorchFile(path: path, reason: reason) }
    // The end record is the last 22 bytes, unless an archive comment (≤ 65 535 bytes) follows.
    var end: Int?
    var candidate = bytes.count - 22
    while candidate >= 0 && candidate >= bytes.count - 22 - 0xFFFF {
      if bytes.uint32(at: candidate) == Self.endSignature,
        let comment = bytes.uint16(at: candidate + 20), candidate + 22 + Int(comment) == bytes.count
      {
        end = candidate
        break
      }
      candidate -= 1
    }
    guard let end else { throw fail("no ZIP end of central directory record (truncated?)") }
    var count = UInt64(bytes.uint16(at: end + 10) ?? 0)
    var directorySize = UInt64(bytes.uint32(at: end + 12) ?? 0)
    var directoryOffset = UInt64(bytes.uint32(at: end + 16) ?? 0)
    let disk = bytes.uint16(at: end + 4) ?? 0
    if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
      // ZIP64: a locator just before the end record points at the 64-bit end record.
      guard bytes.uint32(at: end - 20) == Self.zip64LocatorSignature,
        let recordOffset = bytes.uint64(at: end - 12), recordOffset < UInt64(end),
        bytes.uint32(at: Int(recordOffset)) == Self.zip64EndSignature,
        let total = bytes.uint64(at: Int(recordOffset) + 32),
        let size = bytes.uint64(at: Int(recordOffset) + 40),
        let offset = bytes.uint64(at: Int(recordOffset) + 48)
      else { throw fail("the ZIP64 end of central directory record is missing or cut short") }
      (count, directorySize, directoryOffset) = (total, size, offset)
    } else if disk != 0 {
      throw fail("it is one part of a multi-disk ZIP archive")
    }
    guard directoryOffset <= UInt64(end), directorySize <= UInt64(end) - directoryOffset else {
      throw fail(
        "the central directory (\(directorySize) bytes at \(directoryOffset)) is outside the file")
    }
    // Every central header is at least 46 bytes, so the count cannot exceed size / 46.
    guard count <= directorySize / 46 else {
      throw fail("\(count) entries cannot fit a \(directorySize)-byte central directory")
    }
    var entries: [Entry] = []
    var index: [String: Int] = [:]
    var position = Int(directoryOffset)
    let directoryEnd = position + Int(directorySize)
    for _ in 0..<Int(count) {
      let entry = try Self.centralEntry(at: &position, end: directoryEnd, bytes: bytes, fail: fail)
      guard index[entry.name] == nil else { throw fail("entry '\(entry.name)' appears twice") }
      index[entry.name] = entries.count
      entries.append(entry)
    }
    self.entries = entries
    self.index = index
  }

  /// Reads the central header at `position` (advancing it) and the local header it points at.
  private static func centralEntry(
    at position: inout Int, end: Int, bytes: [UInt8], fail: (String) -> WeightError
  ) throws(WeightError) -> Entry {
    let start = position
    guard start + 46 <= end, bytes.uint32(at: start) == centralHeaderSignature,
      let flags = bytes.uint16(at: start + 8), let method = bytes.uint16(at: start + 10),
      let crc = bytes.uint32(at: start + 16), let compressed32 = bytes.uint32(at: start + 20),
      let uncompressed32 = bytes.uint32(at: start + 24),
      let nameLength = bytes.uint16(at: start + 28), let extraLength = bytes.uint16(at: start + 30),
      let commentLength = bytes.uint16(at: start + 32),
      let localOffset32 = bytes.uint32(at: start + 42)
    else { throw fail("central directory entry at byte \(start) is malformed") }
    let nameStart = start + 46
    let extraStart = nameStart + Int(nameLength)
    let extraEnd = extraStart + Int(extraLength)
    position = extraEnd + Int(commentLength)
    guard position <= end else {
      throw fail("central directory entry at byte \(start) runs past the directory")
    }
    guard let name = String(validating: bytes[nameStart..<extraStart], as: UTF8.self) else {
      throw fail("an entry name at byte \(nameStart) is not UTF-8")
    }
    // ZIP64 extra field (id 1): the 8-byte forms of the saturated 32-bit fields, in this order.
    var uncompressed = UInt64(uncompressed32)
    var compressed = UInt64(compressed32)
    var localOffset = UInt64(localOffset32)
    var extra = extraStart
    while extra + 4 <= extraEnd, let id = bytes.uint16(at: extra),
      let size = bytes.uint16(at: extra + 2)
    {
      let fieldEnd = extra + 4 + Int(size)
      guard fieldEnd <= extraEnd else { throw fail("entry '\(name)' has a cut-off extra field") }
      if id == 1 {
        var field = extra + 4
        func widen(_ value: inout UInt64) throws(WeightError) {
          guard value == 0xFFFF_FFFF else { return }
          guard field + 8 <= fieldEnd, let wide = bytes.uint64(at: field) else {
            throw fail("entry '\(name)' has a short ZIP64 extra field")
          }
          value = wide
          field += 8
        }
        try widen(&uncompressed)
        try widen(&compressed)
        try widen(&localOffset)
      }
      extra = fieldEnd
    }
    let local = Int(clamping: localOffset)
    guard local <= bytes.count - 30, bytes.uint32(at: local) == localHeaderSignature,
      let localName = bytes.uint16(at: local + 26), let localExtra = bytes.uint16(at: local + 28)
    else { throw fail("entry '\(name)' points at no local header (offset \(localOffset))") }
    let dataStart = local + 30 + Int(localName) + Int(localExtra)
    guard compressed <= UInt64(bytes.count), dataStart <= bytes.count - Int(compressed) else {
      throw fail(
        "entry '\(name)' (\(compressed) bytes at \(dataStart)) runs past the end of the file")
    }
    return Entry(
      name: name, method: method, flags: flags, crc32: crc, compressedSize: Int(compressed),
      uncompressedSize: Int(clamping: uncompressed), dataStart: dataStart)
  }

  /// Whether the archive has an entry called `name`.
  func contains(_ name: String) -> Bool { index[name] != nil }

  /// The byte range of entry `name` inside `bytes`, after checking that it is stored and that
  /// its CRC-32 matches.
  /// - Throws: `WeightError.malformedTorchFile` when it is absent, compressed, encrypted or
  ///   corrupt.
  func dataRange(of name: String) throws(WeightError) -> Range<Int> {
    guard let position = index[name] else {
      throw .malformedTorchFile(path: path, reason: "the archive has no entry '\(name)'")
    }
    let entry = entries[position]
    guard entry.flags & 1 == 0 else {
      throw .malformedTorchFile(path: path, reason: "entry '\(name)' is encrypted")
    }
    guard entry.method == 0 else {
      throw .malformedTorchFile(
        path: path,
        reason:
          "entry '\(name)' is compressed (ZIP method \(entry.method)); torch.save stores entries"
          + " uncompressed and only those are read (was the file re-zipped?)")
    }
    guard entry.compressedSize == entry.uncompressedSize else {
      throw .malformedTorchFile(
        path: path, reason: "stored entry '\(name)' declares two different sizes")
    }
    let range = entry.dataStart..<(entry.dataStart + entry.compressedSize)
    guard Self.crc32(bytes[range]) == entry.crc32 else {
      throw .malformedTorchFile(
        path: path, reason: "entry '\(name)' fails its CRC-32 check (the file is corrupt)")
    }
    return range
  }

  /// CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), the checksum ZIP stores per entry.
  static func crc32(_ data: ArraySlice<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in data {
      crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
    }
    return crc ^ 0xFFFF_FFFF
  }

  private static let crcTable: [UInt32] = (0..<256).map { value in
    var crc = UInt32(value)
    for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    return crc
  }
}

extension [UInt8] {
  /// The little-endian integers at `offset`, or nil when they do not lie inside the array.
  func uint16(at offset: Int) -> UInt16? {
    guard offset >= 0, offset <= count - 2 else { return nil }
    return UInt16(self[offset]) | UInt16(self[offset + 1]) << 8
  }

  func uint32(at offset: Int) -> UInt32? {
    guard offset >= 0, offset <= count - 4 else { return nil }
    return (0..<4).reduce(0) { $0 | UInt32(self[offset + $1]) << (8 * UInt32($1)) }
  }

  func uint64(at offset: Int) -> UInt64? {
    guard offset >= 0, offset <= count - 8 else { return nil }
    return (0..<8).reduce(0) { $0 | UInt64(self[offset + $1]) << (8 * UInt64($1)) }
  }
}

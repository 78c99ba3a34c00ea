// 8-bit RGB images and PNG files through libpng's simplified API; the only file that imports
// CPNG. PNGs are written atomically and carry the generation parameters in tEXt chunks, as
// common SD tools do ("parameters" key).

import CPNG
import Foundation
import SDTensor

/// An 8-bit RGB image, rows top to bottom, pixels as r, g, b bytes.
public struct RGBImage: Sendable, Equatable {
  /// Pixels per row.
  public let width: Int
  /// Rows.
  public let height: Int
  /// `width · height · 3` bytes.
  public var pixels: [UInt8]

  /// An image from its pixels; `pixels.count` must be `width · height · 3`.
  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(
      pixels.count == width * height * 3,
      "RGB image \(width)x\(height) needs \(width * height * 3) bytes")
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// An image filled with one colour.
  public init(width: Int, height: Int, red: UInt8, green: UInt8, blue: UInt8) {
    self.init(
      width: width, height: height,
      pixels: (0..<(width * height)).flatMap { _ in [red, green, blue] })
  }

  /// Converts a decoded image tensor `[1, 3, h, w]` in [-1, 1] to 8-bit, as diffusers does:
  /// (x / 2 + 0.5) clamped to [0, 1], times 255, rounded.
  public init(decoded tensor: Tensor, index: Int = 0) {
    let (h, w) = (tensor.shape[2], tensor.shape[3])
    let plane = h * w
    let base = index * 3 * plane
    var pixels = [UInt8](repeating: 0, count: plane * 3)
    for channel in 0..<3 {
      for i in 0..<plane {
        let value = min(1, max(0, tensor.scalars[base + channel * plane + i] / 2 + 0.5))
        pixels[i * 3 + channel] = UInt8((value * 255).rounded())
      }
    }
    self.init(width: w, height: h, pixels: pixels)
  }

  /// The image as a tensor `[1, 3, h, w]` in [-1, 1] (diffusers' VaeImageProcessor: x/255·2 − 1).
  public var tensor: Tensor {
    let plane = width * height
    var values = [Float](repeating: 0, count: 3 * plane)
    for i in 0..<plane {
      for channel in 0..<3 {
        values[channel * plane + i] = Float(pixels[i * 3 + channel]) / 255 * 2 - 1
      }
    }
    return Tensor(shape: [1, 3, height, width], scalars: values)
  }

  /// The bytes of a PNG file (at most 256 MB), refusing what is not a regular file.
  static func readFile(_ url: URL) throws(PipelineError) -> [UInt8] {
    do { return try RegularFile.read(url.path, maximumBytes: 256 << 20) } catch {
      guard case .unreadableFile(_, let reason) = error else {
        throw .unreadableImage(path: url.path, reason: error.description)
      }
      throw .unreadableImage(path: url.path, reason: reason)
    }
  }

  /// Reads a PNG (any colour type; alpha is composited on black, palette and 16-bit are
  /// converted by libpng).
  /// - Throws: `PipelineError.unreadableImage` naming the file.
  public init(contentsOf url: URL) throws(PipelineError) {
    let data = try Self.readFile(url)
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    var pixels: [UInt8] = []
    // libpng keeps the pointer from begin to finish: both run while the bytes are pinned.
    let failure: String? = data.withUnsafeBytes { bytes in
      guard png_image_begin_read_from_memory(&image, bytes.baseAddress, bytes.count) != 0 else {
        return PNGMessage(image)
      }
      // Checked before anything is decoded: a small, highly compressed file can declare an
      // image whose pixels would not fit in memory. The pipeline makes at most 4096×4096.
      guard image.width > 0, image.height > 0, image.width <= 4096, image.height <= 4096 else {
        png_image_free(&image)
        return "\(image.width)x\(image.height) pixels; images up to 4096x4096 are read"
      }
      image.format = UInt32(PNG_FORMAT_RGB)
      pixels = [UInt8](repeating: 0, count: Int(image.width) * Int(image.height) * 3)
      let finished = pixels.withUnsafeMutableBytes {
        png_image_finish_read(&image, nil, $0.baseAddress, 0, nil)
      }
      return finished != 0 ? nil : PNGMessage(image)
    }
    if let failure { throw .unreadableImage(path: url.path, reason: failure) }
    self.init(width: Int(image.width), height: Int(image.height), pixels: pixels)
  }

  /// PNG bytes of the image with `text` as tEXt chunks (keys ≤ 79 Latin-1 characters).
  public func pngData(text: [(String, String)] = []) throws(PipelineError) -> [UInt8] {
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    image.width = UInt32(width)
    image.height = UInt32(height)
    image.format = UInt32(PNG_FORMAT_RGB)
    var size = 0
    let sized = pixels.withUnsafeBytes {
      png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, 0, nil)
    }
    guard sized != 0, size > 0 else {
      throw .unwritableOutput(path: "<memory>", reason: PNGMessage(image))
    }
    var bytes = [UInt8](repeating: 0, count: size)
    let written = bytes.withUnsafeMutableBytes { out in
      pixels.withUnsafeBytes {
        png_image_write_to_memory(&image, out.baseAddress, &size, 0, $0.baseAddress, 0, nil)
      }
    }
    guard written != 0 else { throw .unwritableOutput(path: "<memory>", reason: PNGMessage(image)) }
    bytes.removeSubrange(size...)
    return PNGText.inserting(text, into: bytes)
  }

  /// Writes the image as PNG atomically (see `AtomicFile`): an interrupted or failed write never
  /// leaves a partial file at `url`. With `replacing` false, an existing path (even one that
  /// appears while this runs) is an error; otherwise a regular file is replaced and a FIFO or
  /// device written into. `commit` is asked just before the file takes its place: false abandons
  /// the write and throws `.cancelled`.
  /// - Throws: `PipelineError.unwritableOutput` or `.outputExists` naming the path.
  public func writePNG(
    to url: URL, text: [(String, String)] = [], replacing: Bool = true,
    commit: () -> Bool = { true }
  ) throws(PipelineError) {
    let bytes = try pngData(text: text)
    let committed: Bool
    do {
      committed = try AtomicFile.write(
        bytes, to: url.path, existing: replacing ? .replace : .keep, commit: commit)
    } catch {
      switch error {
      case .destinationExists(let path): throw .outputExists(path: path)
      case .unwritableFile(let path, let reason):
        throw .unwritableOutput(path: path, reason: reason)
      default: throw .unwritableOutput(path: url.path, reason: error.description)
      }
    }
    guard committed else { throw .cancelled }
  }
}

/// libpng's error text from a simplified-API control structure.
private func PNGMessage(_ image: png_image) -> String {
  var message = image.message
  return withUnsafeBytes(of: &message) { raw in
    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
  }
}

/// Text chunks of PNG files: written after the header and before the image data (readers that
/// stop at the first IDAT still find them), read back by `read` (the `parameters` of the web UIs
/// and of `sd`). libpng's simplified API cannot write them, so they are spliced in here.
public enum PNGText {
  /// Inserts one chunk per (key, value) right after IHDR: tEXt when the value is Latin-1, else
  /// iTXt (UTF-8), as Pillow's PngInfo writes them.
  static func inserting(_ text: [(String, String)], into png: [UInt8]) -> [UInt8] {
    // The signature (8 bytes) and IHDR (4 length + 4 type + 13 data + 4 CRC) come first.
    let afterHeader = 8 + 25
    guard !text.isEmpty, png.count > afterHeader else { return png }
    var chunks: [UInt8] = []
    for (key, value) in text {
      let keyBytes = Array(
        key.unicodeScalars.compactMap { $0.value < 256 && $0.value > 31 ? UInt8($0.value) : nil }
          .prefix(79))
      let body: [UInt8]
      if value.unicodeScalars.allSatisfy({ $0.value < 256 }) {
        body = Array("tEXt".utf8) + keyBytes + [0] + value.unicodeScalars.map { UInt8($0.value) }
      } else {
        // Uncompressed, no language tag, no translated keyword.
        body = Array("iTXt".utf8) + keyBytes + [0, 0, 0, 0, 0] + Array(value.utf8)
      }
      chunks += bigEndian(UInt32(body.count - 4)) + body + bigEndian(crc32(body))
    }
    return Array(png[..<afterHeader]) + chunks + png[afterHeader...]
  }

  /// The text chunks (tEXt and uncompressed iTXt) of an encoded PNG, by keyword.
  public static func read(_ png: [UInt8]) -> [String: String] {
    var result: [String: String] = [:]
    var offset = 8
    while offset + 12 <= png.count {
      let length = png[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
      guard length <= png.count, offset + 12 + length <= png.count else { break }
      let type = String(decoding: png[offset + 4..<offset + 8], as: UTF8.self)
      let body = png[offset + 8..<offset + 8 + length]
      if let zero = body.firstIndex(of: 0) {
        let key = String(decoding: body[..<zero], as: UTF8.self)
        if type == "tEXt" {
          result[key] = String(body[(zero + 1)...].map { Character(Unicode.Scalar($0)) })
        } else if type == "iTXt", body.endIndex > zero + 2, body[zero + 1] == 0 {
          // Skip the compression flag and method, then the language tag and translated keyword.
          var rest = body[(zero + 3)...]
          for _ in 0..<2 {
            guard let end = rest.firstIndex(of: 0) else { break }
            rest = rest[(end + 1)...]
          }
          result[key] = String(decoding: rest, as: UTF8.self)
        }
      }
      if type == "IEND" { break }
      offset += 12 + length
    }
    return result
  }

  /// The text chunks of the PNG file at `url`.
  /// - Throws: `PipelineError.unreadableImage` when the file cannot be read.
  public static func read(contentsOf url: URL) throws(PipelineError) -> [String: String] {
    read(try RGBImage.readFile(url))
  }

  static func bigEndian(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
  }

  /// CRC-32 (ISO 3309) as PNG chunks require, over type and data.
  static func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
      crc ^= UInt32(byte)
      for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
    }
    return crc ^ 0xFFFF_FFFF
  }
}

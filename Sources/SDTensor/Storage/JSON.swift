// A small strict JSON parser and printer for safetensors headers and model config files.
// Our own rather than Foundation's because headers come from strangers: integers must be exact
// (offsets near Int64 limits), nesting is bounded, duplicate keys and bad UTF-8 are rejected.
// Config files are read in Python's dialect, which adds NaN, Infinity and -Infinity: diffusers
// writes them with `json.dump` (DPMSolverMultistepScheduler saves `"lambda_min_clipped": -Infinity`).

import Foundation

/// A parsed JSON value. Integers that fit in `Int` are kept exact; other numbers are `Double`.
public enum JSONValue: Sendable, Equatable {
  /// `{...}`: members by key (keys are unique; duplicates are a parse error).
  case object([String: JSONValue])
  /// `[...]`: elements in order.
  case array([JSONValue])
  /// A string, its escapes decoded.
  case string(String)
  /// A number written without fraction or exponent that fits in `Int`, kept exact.
  case integer(Int)
  /// Any other number (a fraction, an exponent, or too large for `Int`; also Python's `NaN` and
  /// `Infinity` when allowed).
  case number(Double)
  /// `true` or `false`.
  case bool(Bool)
  /// `null`.
  case null

  /// Why a text is not JSON, with the byte offset where reading stopped.
  public struct ParseError: Error, CustomStringConvertible, Sendable {
    /// 0-based byte offset in the input where reading stopped.
    public let offset: Int
    /// What was expected or found there, e.g. "duplicate key \"a\"".
    public let reason: String
    /// One line: "invalid JSON at byte `offset`: `reason`".
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
  }

  /// Parses `bytes` as one JSON value (UTF-8), allowing surrounding white space only.
  /// `allowingNonFiniteNumbers` also accepts Python's `NaN`, `Infinity` and `-Infinity` (for
  /// config files; safetensors headers stay strict).
  public static func parse<Bytes: Collection>(
    _ bytes: Bytes, allowingNonFiniteNumbers: Bool = false
  ) throws(ParseError) -> JSONValue
  where Bytes.Element == UInt8 {
    var parser = Parser(bytes: Array(bytes), allowsNonFinite: allowingNonFiniteNumbers)
    parser.skipSpace()
    let value = try parser.value(depth: 0)
    parser.skipSpace()
    guard parser.position == parser.bytes.count else { throw parser.error("trailing characters") }
    return value
  }

  /// The member `key` of an object, or nil.
  public subscript(key: String) -> JSONValue? {
    if case .object(let members) = self { return members[key] }
    return nil
  }

  /// The value as an exact integer (a float with an integral value counts), or nil.
  public var intValue: Int? {
    switch self {
    case .integer(let i): return i
    case .number(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int(d)
    default: return nil
    }
  }

  /// The value as a Double, or nil.
  public var doubleValue: Double? {
    switch self {
    case .integer(let i): return Double(i)
    case .number(let d): return d
    default: return nil
    }
  }

  /// The value as a String, or nil.
  public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
  /// The value as a Bool, or nil.
  public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
  /// The elements of an array, or nil.
  public var arrayValue: [JSONValue]? {
    if case .array(let a) = self { return a } else { return nil }
  }
  /// The members of an object, or nil.
  public var objectValue: [String: JSONValue]? {
    if case .object(let o) = self { return o } else { return nil }
  }

  /// Compact JSON text with object keys sorted (deterministic output).
  public var serialized: String {
    switch self {
    case .object(let members):
      let body = members.keys.sorted().map { key in
        "\(JSONValue.string(key).serialized):\(members[key]?.serialized ?? "null")"
      }
      return "{" + body.joined(separator: ",") + "}"
    case .array(let elements): return "[" + elements.map(\.serialized).joined(separator: ",") + "]"
    case .string(let s): return JSONValue.quote(s)
    case .integer(let i): return String(i)
    case .number(let d): return d.isFinite ? "\(d)" : "null"
    case .bool(let b): return b ? "true" : "false"
    case .null: return "null"
    }
  }

  private static func quote(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20:
        let hex = String(scalar.value, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out + "\""
  }
}

/// Recursive-descent reader over UTF-8 bytes.
private struct Parser {
  let bytes: [UInt8]
  /// Python's `NaN`, `Infinity`, `-Infinity` are numbers (config files).
  let allowsNonFinite: Bool
  var position = 0
  /// Deeper nesting than any header or config needs; bounds recursion on hostile input.
  static let maximumDepth = 64

  init(bytes: [UInt8], allowsNonFinite: Bool) {
    self.bytes = bytes
    self.allowsNonFinite = allowsNonFinite
  }

  func error(_ reason: String) -> JSONValue.ParseError {
    JSONValue.ParseError(offset: position, reason: reason)
  }

  mutating func skipSpace() {
    while position < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[position]) {
      position += 1
    }
  }

  mutating func value(depth: Int) throws(JSONValue.ParseError) -> JSONValue {
    guard depth < Parser.maximumDepth else { throw error("nested too deeply") }
    guard position < bytes.count else { throw error("unexpected end") }
    switch bytes[position] {
    case UInt8(ascii: "{"): return try object(depth: depth)
    case UInt8(ascii: "["): return try array(depth: depth)
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"): try literal("true"); return .bool(true)
    case UInt8(ascii: "f"): try literal("false"); return .bool(false)
    case UInt8(ascii: "n"): try literal("null"); return .null
    case UInt8(ascii: "N") where allowsNonFinite: try literal("NaN"); return .number(.nan)
    case UInt8(ascii: "I") where allowsNonFinite: try literal("Infinity"); return .number(.infinity)
    default: return try number()
    }
  }

  mutating func literal(_ word: String) throws(JSONValue.ParseError) {
    let utf8 = Array(word.utf8)
    guard position + utf8.count <= bytes.count,
      Array(bytes[position..<position + utf8.count]) == utf8
    else { throw error("expected \(word)") }
    position += utf8.count
  }

  mutating func expect(_ byte: Character) throws(JSONValue.ParseError) {
    guard position < bytes.count, bytes[position] == byte.asciiValue else {
      throw error("expected '\(byte)'")
    }
    position += 1
  }

  mutating func object(depth: Int) throws(JSONValue.ParseError) -> JSONValue {
    try expect("{")
    var members: [String: JSONValue] = [:]
    skipSpace()
    if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
      position += 1
      return .object(members)
    }
    while true {
      skipSpace()
      guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
        throw error("expected a string key")
      }
      let key = try string()
      guard members[key] == nil else { throw error("duplicate key \"\(key)\"") }
      skipSpace()
      try expect(":")
      skipSpace()
      members[key] = try value(depth: depth + 1)
      skipSpace()
      guard position < bytes.count else { throw error("unterminated object") }
      if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
      try expect("}")
      return .object(members)
    }
  }

  mutating func array(depth: Int) throws(JSONValue.ParseError) -> JSONValue {
    try expect("[")
    var elements: [JSONValue] = []
    skipSpace()
    if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
      position += 1
      return .array(elements)
    }
    while true {
      skipSpace()
      elements.append(try value(depth: depth + 1))
      skipSpace()
      guard position < bytes.count else { throw error("unterminated array") }
      if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
      try expect("]")
      return .array(elements)
    }
  }

  mutating func string() throws(JSONValue.ParseError) -> String {
    try expect("\"")
    var utf8: [UInt8] = []
    while true {
      guard position < bytes.count else { throw error("unterminated string") }
      let byte = bytes[position]
      position += 1
      switch byte {
      case UInt8(ascii: "\""):
        guard let text = String(validating: utf8, as: UTF8.self) else {
          throw error("string is not valid UTF-8")
        }
        return text
      case UInt8(ascii: "\\"):
        guard position < bytes.count else { throw error("unterminated escape") }
        let escape = bytes[position]
        position += 1
        switch escape {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
          var code = try hex4()
          if (0xD800..<0xDC00).contains(code) {
            // A high surrogate must be followed by an escaped low surrogate.
            try literal("\\u")
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
          utf8.append(contentsOf: Array(String(Character(scalar)).utf8))
        default: throw error("invalid escape")
        }
      case 0..<0x20: throw error("control character in string")
      default: utf8.append(byte)
      }
    }
  }

  mutating func hex4() throws(JSONValue.ParseError) -> UInt32 {
    guard position + 4 <= bytes.count else { throw error("short \\u escape") }
    var code: UInt32 = 0
    for _ in 0..<4 {
      guard let digit = hexDigit(bytes[position]) else { throw error("bad hex digit") }
      code = code << 4 | digit
      position += 1
    }
    return code
  }

  func hexDigit(_ byte: UInt8) -> UInt32? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
    default: return nil
    }
  }

  mutating func number() throws(JSONValue.ParseError) -> JSONValue {
    let start = position
    var isInteger = true
    if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
    // `value` reads a leading `Infinity`; here it can only follow the sign.
    if allowsNonFinite, position < bytes.count, bytes[position] == UInt8(ascii: "I") {
      try literal("Infinity")
      return .number(-.infinity)
    }
    let digitsStart = position
    while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
    guard position > digitsStart else { throw error("expected a value") }
    if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
      isInteger = false
      position += 1
      let fraction = position
      while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
      guard position > fraction else { throw error("expected digits after '.'") }
    }
    if position < bytes.count, bytes[position] | 0x20 == UInt8(ascii: "e") {
      isInteger = false
      position += 1
      if position < bytes.count,
        bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")
      {
        position += 1
      }
      let exponent = position
      while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
      guard position > exponent else { throw error("expected exponent digits") }
    }
    let text = String(decoding: bytes[start..<position], as: UTF8.self)
    // Integers too large for Int stay numbers (as Double) and fail any later exact-int check.
    if isInteger, let exact = Int(text) { return .integer(exact) }
    guard let double = Double(text) else { throw error("unreadable number") }
    return .number(double)
  }
}

extension JSONValue.ParseError: LocalizedError {
  /// The description, so that `localizedDescription` says what went wrong.
  public var errorDescription: String? { description }
}

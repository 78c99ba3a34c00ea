// Typed fields of a diffusers/transformers config file (`config.json`, `scheduler_config.json`),
// read in Python's JSON dialect (`NaN`, `Infinity`), with errors that name the file and key.
// The one config reader of the package: the model configurations and the scheduler's use it.

import Foundation
import SDTensor

/// Reads typed fields from a parsed config file and names the file and field in every error.
/// Fields that are absent or `null` read as nil (or as the given default).
public struct ConfigReader: Sendable {
  /// The parsed file: an object.
  public let json: JSONValue
  /// The file's path, for messages.
  public let file: String

  /// Reads and parses `url`.
  /// - Throws: `ModelError.invalidConfiguration` when it cannot be read, is not JSON, or is not
  ///   a JSON object.
  public init(contentsOf url: URL) throws(ModelError) {
    file = url.path
    let data: [UInt8]
    do { data = try RegularFile.read(url.path, maximumBytes: 16 << 20) } catch {
      guard case .unreadableFile(_, let reason) = error else { throw .weights(error) }
      throw .invalidConfiguration(file: url.path, reason: "cannot read: \(reason)")
    }
    do { json = try JSONValue.parse(data, allowingNonFiniteNumbers: true) } catch {
      throw .invalidConfiguration(file: url.path, reason: error.description)
    }
    guard json.objectValue != nil else {
      throw .invalidConfiguration(file: url.path, reason: "not a JSON object")
    }
  }

  /// A reader over an already parsed object (a nested config such as `text_config`).
  public init(json: JSONValue, file: String) {
    self.json = json
    self.file = file
  }

  /// The error for a field that is not what it must be: "'key' must be <expectation>".
  public func fail(_ key: String, _ expectation: String) -> ModelError {
    .invalidConfiguration(file: file, reason: "'\(key)' must be \(expectation)")
  }

  /// The field, or nil when it is absent or `null`.
  public func value(_ key: String) -> JSONValue? {
    guard let value = json[key], value != .null else { return nil }
    return value
  }

  /// Whether `key` is present and not null.
  public func has(_ key: String) -> Bool { value(key) != nil }

  /// An integer in `range`, or nil when absent.
  public func int(_ key: String, in range: ClosedRange<Int>) throws(ModelError) -> Int? {
    guard let raw = value(key) else { return nil }
    guard let number = raw.intValue, range.contains(number) else {
      throw fail(key, "an integer in \(range)")
    }
    return number
  }

  /// An integer ≥ `minimum`; `fallback` when absent (required when there is none).
  public func int(_ key: String, default fallback: Int? = nil, minimum: Int = 1)
    throws(ModelError) -> Int
  {
    guard has(key) else {
      if let fallback { return fallback }
      throw fail(key, "present")
    }
    guard let value = json[key]?.intValue, value >= minimum else {
      throw fail(key, "an integer >= \(minimum)")
    }
    return value
  }

  /// A finite number, or nil when absent.
  public func double(_ key: String) throws(ModelError) -> Double? {
    guard let raw = value(key) else { return nil }
    guard let number = raw.doubleValue, number.isFinite else { throw fail(key, "a number") }
    return number
  }

  /// A finite number; `fallback` when absent.
  public func float(_ key: String, default fallback: Float) throws(ModelError) -> Float {
    try double(key).map { Float($0) } ?? fallback
  }

  /// A finite number > 0 (an epsilon, a scale); `fallback` when absent.
  public func positiveFloat(_ key: String, default fallback: Float) throws(ModelError) -> Float {
    let value = try float(key, default: fallback)
    guard value > 0 else { throw fail(key, "a number > 0, got \(value)") }
    return value
  }

  /// true or false, or nil when absent.
  public func bool(_ key: String) throws(ModelError) -> Bool? {
    guard let raw = value(key) else { return nil }
    guard let flag = raw.boolValue else { throw fail(key, "true or false") }
    return flag
  }

  /// true or false; `fallback` when absent.
  public func bool(_ key: String, default fallback: Bool) throws(ModelError) -> Bool {
    try bool(key) ?? fallback
  }

  /// One of `allowed`, or nil when absent. The message says the others are not implemented.
  public func string(_ key: String, oneOf allowed: [String]) throws(ModelError) -> String? {
    guard let raw = value(key) else { return nil }
    guard let text = raw.stringValue, allowed.contains(text) else {
      throw fail(key, "one of \(allowed.joined(separator: ", ")) (others are not implemented)")
    }
    return text
  }

  /// A string; `fallback` when absent.
  public func string(_ key: String, default fallback: String) throws(ModelError) -> String {
    guard has(key) else { return fallback }
    guard let value = json[key]?.stringValue else { throw fail(key, "a string") }
    return value
  }

  /// A list of strings; `fallback` when absent.
  public func strings(_ key: String, default fallback: [String]) throws(ModelError) -> [String] {
    guard has(key) else { return fallback }
    guard let values = json[key]?.arrayValue?.compactMap(\.stringValue),
      values.count == json[key]?.arrayValue?.count
    else { throw fail(key, "a list of strings") }
    return values
  }

  /// An int list; a single int is repeated `count` times (diffusers accepts both spellings).
  public func ints(_ key: String, count: Int, default fallback: [Int]?) throws(ModelError) -> [Int]
  {
    guard has(key) else {
      if let fallback { return fallback }
      throw fail(key, "present")
    }
    if let single = json[key]?.intValue, single > 0 {
      return Array(repeating: single, count: count)
    }
    guard let values = json[key]?.arrayValue?.compactMap(\.intValue), values.count == count,
      values.allSatisfy({ $0 > 0 })
    else { throw fail(key, "a positive integer or a list of \(count) of them") }
    return values
  }
}

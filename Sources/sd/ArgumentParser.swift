// A small command-line parser: declared options with defaults and help, typed accessors, and
// one-line errors naming the option (no network packages are available to the build).

import Foundation
import SDPipeline

/// A usage error: the CLI prints it on one line and exits with status 2.
struct UsageError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

/// One declared option.
struct OptionSpec {
  /// Long name without dashes, e.g. "negative-prompt".
  let name: String
  /// Placeholder of the value (e.g. "TEXT"), or nil for a flag.
  let valueName: String?
  /// Default shown in --help (nil: no default).
  let defaultValue: String?
  let help: String
  /// Whether the option may be given several times.
  var repeatable = false

  /// `--help`, which every command takes.
  static let help = OptionSpec(
    name: "help", valueName: nil, defaultValue: nil, help: "show this help")
  /// `--threads`, for the commands that compute (read with `ParsedArguments.threadCount()`).
  static let threads = OptionSpec(
    name: "threads", valueName: "N", defaultValue: "CPU count",
    help: "threads to compute with (results do not depend on it)")
}

/// Parsed options of one command.
struct ParsedArguments {
  private(set) var values: [String: [String]] = [:]
  private(set) var flags: Set<String> = []
  private(set) var positional: [String] = []

  /// Parses `words` against `specs`. `--name value` and `--name=value` are accepted.
  init(_ words: [String], specs: [OptionSpec]) throws(UsageError) {
    let byName = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0) })
    var index = 0
    while index < words.count {
      let word = words[index]
      index += 1
      guard word.hasPrefix("--"), word.count > 2 else {
        positional.append(word)
        continue
      }
      var name = String(word.dropFirst(2))
      var inlineValue: String?
      if let equals = name.firstIndex(of: "=") {
        inlineValue = String(name[name.index(after: equals)...])
        name = String(name[..<equals])
      }
      guard let spec = byName[name] else {
        throw UsageError("unknown option --\(name) (see --help)")
      }
      guard spec.valueName != nil else {
        guard inlineValue == nil else { throw UsageError("--\(name) takes no value") }
        flags.insert(name)
        continue
      }
      let value: String
      if let inlineValue {
        value = inlineValue
      } else {
        guard index < words.count else {
          throw UsageError("--\(name) needs a value (\(spec.valueName ?? "VALUE"))")
        }
        value = words[index]
        index += 1
      }
      if values[name] != nil && !spec.repeatable { throw UsageError("--\(name) given twice") }
      values[name, default: []].append(value)
    }
  }

  /// These arguments with every option `overrides` gives replaced by its values there (a batch
  /// line over the batch's defaults, a grid axis over the grid's settings).
  func overridden(by overrides: ParsedArguments) -> ParsedArguments {
    var merged = self
    for (name, values) in overrides.values { merged.values[name] = values }
    merged.flags.formUnion(overrides.flags)
    merged.positional += overrides.positional
    return merged
  }

  /// Only the options of `specs` (and no positional arguments).
  func restricted(to specs: [OptionSpec]) -> ParsedArguments {
    let names = Set(specs.map(\.name))
    var kept = self
    kept.values = values.filter { names.contains($0.key) }
    kept.flags = flags.filter { names.contains($0) }
    kept.positional = []
    return kept
  }

  /// Whether `name` was given.
  func has(_ name: String) -> Bool { flags.contains(name) || values[name] != nil }
  func string(_ name: String) -> String? { values[name]?.last }
  func strings(_ name: String) -> [String] { values[name] ?? [] }

  func int(_ name: String, default fallback: Int? = nil, range: ClosedRange<Int>) throws(UsageError)
    -> Int?
  {
    guard let text = string(name) else { return fallback }
    guard let value = Int(text), range.contains(value) else {
      throw UsageError(
        "--\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
    }
    return value
  }

  /// `--threads`, defaulting to the CPU count.
  func threadCount() throws(UsageError) -> Int {
    try int("threads", default: ProcessInfo.processInfo.activeProcessorCount, range: 1...256) ?? 1
  }

  func float(_ name: String, default fallback: Float? = nil, range: ClosedRange<Float>)
    throws(UsageError) -> Float?
  {
    guard let text = string(name) else { return fallback }
    guard let value = Float(text), value.isFinite, range.contains(value) else {
      throw UsageError(
        "--\(name) must be a number in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
    }
    return value
  }

  func seed(_ name: String) throws(UsageError) -> UInt64? {
    guard let text = string(name) else { return nil }
    guard let value = UInt64(text) else {
      throw UsageError("--\(name) must be a whole number in 0...\(UInt64.max), got '\(text)'")
    }
    return value
  }

  /// `A-B`, 1-based steps with A ≤ B, or nil when the option is absent.
  func stepRange(_ name: String) throws(UsageError) -> ClosedRange<Int>? {
    guard let text = string(name) else { return nil }
    let bounds = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
    guard bounds.count == 2, let first = bounds[0], let last = bounds[1], first >= 1, first <= last
    else {
      throw UsageError("--\(name) must be A-B with 1 <= A <= B, got '\(text)'")
    }
    return first...last
  }

  /// Two whole numbers ≥ 0 joined by `separator` (`1024x768`, `8,4`), or nil when absent.
  func pair(_ name: String, separator: Character, form: String) throws(UsageError) -> (Int, Int)? {
    guard let text = string(name) else { return nil }
    let parts = text.lowercased().split(separator: separator, omittingEmptySubsequences: false)
    guard parts.count == 2, let first = Int(parts[0]), let second = Int(parts[1]), first >= 0,
      second >= 0, first <= 65_536, second <= 65_536
    else {
      throw UsageError("--\(name) must be \(form) (whole numbers up to 65536), got '\(text)'")
    }
    return (first, second)
  }

  /// A path that must exist.
  func existingPath(_ name: String) throws(UsageError) -> URL? {
    guard let text = string(name) else { return nil }
    guard FileManager.default.fileExists(atPath: text) else {
      throw UsageError("--\(name): no such file or folder '\(text)'")
    }
    return URL(fileURLWithPath: text)
  }
}

/// `words` parsed against `specs`, or nil once `--help` was asked for and the help printed.
func parsedOrHelp(_ words: [String], specs: [OptionSpec], usage: String, summary: String)
  throws(UsageError) -> ParsedArguments?
{
  let arguments = try ParsedArguments(words, specs: specs)
  guard arguments.has("help") else { return arguments }
  print(helpText(usage: usage, summary: summary, specs: specs))
  return nil
}

/// The --help text of a command: usage line, then every option with its default.
func helpText(usage: String, summary: String, specs: [OptionSpec]) -> String {
  var lines = ["usage: \(usage)", "", summary, "", "options:"]
  for spec in specs {
    let left = "  --\(spec.name)" + (spec.valueName.map { " \($0)" } ?? "")
    let padded =
      left.count < 30
      ? left.padding(toLength: 30, withPad: " ", startingAt: 0)
      : left + "\n" + String(repeating: " ", count: 30)
    lines.append(padded + spec.help + (spec.defaultValue.map { " (default: \($0))" } ?? ""))
  }
  return lines.joined(separator: "\n")
}

/// The option that sets a `GenerationRequest` field the library names in its errors:
/// `clipSkip` → `clip-skip`, `nag.tau` → `nag-tau`, `negativePrompts` → `negative-prompt`.
func optionName(ofRequestField field: String) -> String {
  let special = [
    "negativePrompts": "negative-prompt", "negativePromptEmbeddings": "negative-prompt",
    "adapters": "lora", "model": "model", "embedding": "embedding",
    "onlyMaskedPadding": "only-masked", "guidance.cutoff": "cfg-cutoff",
    "tinyAutoencoder": "taesd", "decoder": "taesd", "previews.every": "preview-every",
    "previews.decoder": "taesd",
  ]
  if let name = special[field] { return name }
  var name = ""
  for character in field {
    if character == "." {
      name.append("-")
    } else if character.isUppercase {
      name += "-" + character.lowercased()
    } else {
      name.append(character)
    }
  }
  return name
}

/// A library error as the command line says it: a request field is named as the option that
/// sets it (`clipSkip` → `--clip-skip`).
func message(for error: PipelineError) -> String {
  if case .invalidArgument(let name, let reason) = error {
    return "--\(optionName(ofRequestField: name)): \(reason)"
  }
  return error.description
}

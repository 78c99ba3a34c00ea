// `--from-png FILE`: the generate options a PNG's "parameters" text records (ours or the web
// UIs'), read back so a run can be repeated or varied; options on the command line win.

import Foundation
import SDPipeline

enum PNGParameters {
  /// The request options in `text` (see `GenerationRequest.parametersText`) as `sd` words.
  /// Keys this runtime has no option for (Model, hashes, the web UIs' own) are skipped.
  static func words(fromParameters text: String) throws(UsageError) -> [String] {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var settings: [(String, String)] = []
    if let last = lines.last, last.hasPrefix("Steps: ") {
      settings = try pairs(last)
      lines.removeLast()
    }
    let negativeStart = lines.firstIndex { $0.hasPrefix("Negative prompt: ") }
    let promptLines = negativeStart.map { Array(lines[..<$0]) } ?? lines
    var words = ["--prompt", promptLines.joined(separator: "\n")]
    let values = Dictionary(settings, uniquingKeysWith: { $1 })
    if let full = values["Negative prompts"] {
      for negative in full.components(separatedBy: " | ") {
        words += ["--negative-prompt", negative]
      }
    } else if let negativeStart {
      let negative = lines[negativeStart...].joined(separator: "\n")
      words += ["--negative-prompt", String(negative.dropFirst("Negative prompt: ".count))]
    }
    let options = [
      ("Steps", "steps"), ("CFG scale", "guidance-scale"), ("Seed", "seed"),
      ("Denoising strength", "strength"), ("CFG rescale", "guidance-rescale"),
      ("CFG cutoff", "cfg-cutoff"),
      ("Guidance", "guidance"), ("NAG scale", "nag-scale"), ("NAG tau", "nag-tau"),
      ("NAG alpha", "nag-alpha"), ("NAG steps", "nag-steps"), ("Negative steps", "negative-steps"),
    ]
    for (key, option) in options {
      if let value = values[key] { words += ["--\(option)", value] }
    }
    if let name = values["Sampler"] {
      guard let sampler = SchedulerKind.allCases.first(where: { $0.webUIName == name }) else {
        throw UsageError(
          "--from-png: sampler '\(name)' is not one of \(SchedulerKind.allCases.map(\.webUIName).joined(separator: ", "))"
        )
      }
      words += ["--sampler", sampler.rawValue]
    }
    if let name = values["Schedule type"], name != ScheduleType.automatic.webUIName {
      guard let schedule = ScheduleType.allCases.first(where: { $0.webUIName == name }) else {
        throw UsageError(
          "--from-png: schedule type '\(name)' is not one of \(ScheduleType.allCases.map(\.webUIName).joined(separator: ", "))"
        )
      }
      words += ["--schedule", schedule.rawValue]
    }
    if let size = values["Size"] {
      let sides = size.split(separator: "x").map { String($0) }
      guard sides.count == 2 else { throw UsageError("--from-png: Size '\(size)' is not WxH") }
      words += ["--width", sides[0], "--height", sides[1]]
    }
    // The web UIs count the last layer as 1; our --clip-skip k is their k + 1.
    if let clip = values["Clip skip"] {
      guard let count = Int(clip), count >= 1 else {
        throw UsageError("--from-png: Clip skip '\(clip)' is not a whole number from 1")
      }
      words += ["--clip-skip", String(count - 1)]
    }
    return words
  }

  /// `Key: value, Key: "value, with commas", ...` in order.
  static func pairs(_ line: String) throws(UsageError) -> [(String, String)] {
    var result: [(String, String)] = []
    var rest = Substring(line)
    while !rest.isEmpty {
      guard let colon = rest.range(of: ": ") else {
        throw UsageError("--from-png: cannot read the settings at '\(rest.prefix(40))'")
      }
      let key = rest[..<colon.lowerBound].trimmingCharacters(in: .whitespaces)
      rest = rest[colon.upperBound...]
      var value = ""
      if rest.first == "\"" {
        rest.removeFirst()
        var escaped = false
        while let character = rest.popFirst() {
          if escaped {
            value.append(character)
            escaped = false
          } else if character == "\\" {
            escaped = true
          } else if character == "\"" {
            break
          } else {
            value.append(character)
          }
        }
        if rest.hasPrefix(", ") { rest.removeFirst(2) }
      } else if let comma = rest.range(of: ", ") {
        value = String(rest[..<comma.lowerBound])
        rest = rest[comma.upperBound...]
      } else {
        value = String(rest)
        rest = ""
      }
      result.append((key, value))
    }
    return result
  }
}

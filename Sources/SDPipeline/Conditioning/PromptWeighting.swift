// The attention-weight syntax of the widely used web UIs (AUTOMATIC1111's
// `parse_prompt_attention`): `(word)` ×1.1, `((word))` ×1.21, `[word]` ÷1.1, `(word:1.5)` ×1.5,
// `\(` `\)` `\[` `\]` `\\` for literal brackets. Unclosed brackets weight the rest of the prompt;
// a stray closing bracket is kept as text. The weights later scale the token embeddings
// (PromptEncoder). The web UIs' `BREAK` keyword is not special here.

/// A prompt split into runs of text with their attention weights.
public struct WeightedPrompt: Sendable, Equatable {
  /// Consecutive runs with different weights, in order; empty for an empty prompt.
  public var fragments: [(text: String, weight: Float)]

  /// Equal when the fragments have the same texts and weights.
  public static func == (a: WeightedPrompt, b: WeightedPrompt) -> Bool {
    a.fragments.count == b.fragments.count
      && zip(a.fragments, b.fragments).allSatisfy { $0.text == $1.text && $0.weight == $1.weight }
  }

  /// Whether every weight is 1 (the prompt encodes exactly as plain text).
  public var isUniform: Bool { fragments.allSatisfy { $0.weight == 1 } }

  /// Parses the weight syntax of `text`.
  public init(parsing text: String) {
    let round: Float = 1.1
    let square: Float = 1 / 1.1
    var runs: [(text: String, weight: Float)] = []
    var roundStarts: [Int] = []
    var squareStarts: [Int] = []
    func multiply(from start: Int, by factor: Float) {
      for index in start..<runs.count { runs[index].weight *= factor }
    }
    let characters = Array(text)
    var i = 0
    var plain = ""
    func flush() {
      if !plain.isEmpty { runs.append((plain, 1)) }
      plain = ""
    }
    while i < characters.count {
      let character = characters[i]
      if character == "\\" {
        // An escaped bracket or backslash is literal text; a lone backslash is dropped, as the
        // web UIs' parser does.
        if i + 1 < characters.count, "()[]\\".contains(characters[i + 1]) {
          plain.append(characters[i + 1])
        }
        i += i + 1 < characters.count && "()[]\\".contains(characters[i + 1]) ? 2 : 1
        continue
      }
      switch character {
      case "(":
        flush()
        roundStarts.append(runs.count)
      case "[":
        flush()
        squareStarts.append(runs.count)
      case ":" where !roundStarts.isEmpty:
        // `:number)` closes the innermost round bracket with that weight.
        if let (weight, end) = Self.explicitWeight(characters, from: i + 1) {
          flush()
          multiply(from: roundStarts.removeLast(), by: weight)
          i = end
          continue
        }
        plain.append(character)
      case ")" where !roundStarts.isEmpty:
        flush()
        multiply(from: roundStarts.removeLast(), by: round)
      case "]" where !squareStarts.isEmpty:
        flush()
        multiply(from: squareStarts.removeLast(), by: square)
      default:
        plain.append(character)
      }
      i += 1
    }
    flush()
    for start in roundStarts { multiply(from: start, by: round) }
    for start in squareStarts { multiply(from: start, by: square) }
    // Merge neighbours of equal weight, so "a (b) c" tokenizes "a " and " c" as written.
    var merged: [(text: String, weight: Float)] = []
    for run in runs {
      if let last = merged.last, last.weight == run.weight {
        merged[merged.count - 1].text += run.text
      } else {
        merged.append(run)
      }
    }
    fragments = merged
  }

  /// Reads `\s*[+-]?[0-9.]+\s*)` starting at `start`: the weight and the index after ")".
  private static func explicitWeight(_ characters: [Character], from start: Int) -> (Float, Int)? {
    var i = start
    while i < characters.count, characters[i].isWhitespace { i += 1 }
    var number = ""
    if i < characters.count, "+-".contains(characters[i]) {
      number.append(characters[i])
      i += 1
    }
    while i < characters.count,
      characters[i] == "." || characters[i].isASCII && characters[i].isNumber
    {
      number.append(characters[i])
      i += 1
    }
    while i < characters.count, characters[i].isWhitespace { i += 1 }
    guard i < characters.count, characters[i] == ")", let weight = Float(number), weight.isFinite
    else { return nil }
    return (weight, i + 1)
  }
}

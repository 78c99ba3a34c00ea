// The web UIs' prompt syntax for LoRAs, `<lora:NAME>` and `<lora:NAME:SCALE>`: the tags are taken
// out of the text before it is encoded (as AUTOMATIC1111 does) and name adapter files to apply.

import Foundation

/// A LoRA named in a prompt.
public struct LoRATag: Sendable, Equatable {
  /// The adapter's name: its file name without `.safetensors`.
  public var name: String
  /// The scale the tag asks for (1 when it gives none).
  public var scale: Float

  /// A tag naming `name` at `scale`.
  public init(name: String, scale: Float = 1) {
    self.name = name
    self.scale = scale
  }

  /// `<lora:name:scale>`, as the web UIs write it into prompts and PNG parameters.
  public var text: String { "<lora:\(name):\(formatted(scale))>" }

  /// The tags of `prompt` and the prompt without them (the spaces around a removed tag are
  /// folded, so "a cat <lora:x:1>, blue" becomes "a cat, blue").
  /// - Throws: `PipelineError.invalidArgument` naming the tag for an empty name, a scale that is
  ///   not a finite number, or the two-scale form `<lora:name:te:unet>`, which is not supported.
  public static func extract(from prompt: String) throws(PipelineError) -> (
    text: String, tags: [LoRATag]
  ) {
    var text = ""
    var tags: [LoRATag] = []
    var rest = Substring(prompt)
    while let open = rest.range(of: "<lora:") {
      guard let close = rest[open.upperBound...].firstIndex(of: ">") else { break }
      text += rest[..<open.lowerBound]
      let fields = rest[open.upperBound..<close].split(
        separator: ":", omittingEmptySubsequences: false)
      let tag = "<lora:\(rest[open.upperBound..<close])>"
      let name = fields[0].trimmingCharacters(in: .whitespaces)
      guard !name.isEmpty else {
        throw .invalidArgument(name: "prompt", reason: "\(tag) names no LoRA")
      }
      guard fields.count <= 2 else {
        throw .invalidArgument(
          name: "prompt",
          reason: "\(tag): separate text-encoder and UNet scales are not supported; give one scale")
      }
      var scale: Float = 1
      if fields.count == 2 {
        guard let value = Float(fields[1].trimmingCharacters(in: .whitespaces)), value.isFinite
        else {
          throw .invalidArgument(name: "prompt", reason: "\(tag): the scale is not a number")
        }
        scale = value
      }
      tags.append(LoRATag(name: name, scale: scale))
      rest = rest[rest.index(after: close)...]
    }
    text += rest
    return (folded(text), tags)
  }

  /// Runs of spaces left by removed tags become one space, and none before a comma or at the ends.
  private static func folded(_ text: String) -> String {
    var out = ""
    for character in text {
      if character == " " && (out.last == " " || out.isEmpty) { continue }
      if character == "," && out.last == " " { out.removeLast() }
      out.append(character)
    }
    while out.last == " " { out.removeLast() }
    return out
  }
}

/// A scale as the web UIs print it: "1", "0.8", "-0.25".
private func formatted(_ value: Float) -> String {
  value == value.rounded() && abs(value) < 1e6 ? String(Int(value)) : "\(value)"
}

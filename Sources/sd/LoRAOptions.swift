// The command line's LoRAs: `--lora FILE[:SCALE]` (repeatable) and the web UIs' `<lora:NAME:SCALE>`
// tags in the prompts, resolved against `--lora-dir`; the tags are taken out of the prompt text.

import Foundation
import SDModels
import SDPipeline

enum LoRAOptions {
  static let specs: [OptionSpec] = [
    OptionSpec(
      name: "lora", valueName: "FILE[:SCALE]", defaultValue: nil,
      help: "apply a LoRA (.safetensors) at SCALE (default 1); repeatable", repeatable: true),
    OptionSpec(
      name: "lora-dir", valueName: "DIR", defaultValue: nil,
      help: "where <lora:NAME:SCALE> tags in the prompts find NAME.safetensors"),
    ignoreUnknown,
  ]

  /// `--lora-ignore-unknown`, which batch and grid take too.
  static let ignoreUnknown = OptionSpec(
    name: "lora-ignore-unknown", valueName: nil, defaultValue: nil,
    help: "skip LoRA layers the model does not have (with a warning) instead of failing")

  /// A LoRA requested on the command line: the file, the scale and the tag that names it in
  /// the PNG parameters.
  struct Requested {
    let url: URL
    let tag: LoRATag
    /// Where it was asked for: `--lora`, a tag in `--prompt`, or one in a `--negative-prompt`.
    let source: String
  }

  /// The `--lora` files of `arguments`, then the tags found in the prompt and in the negative
  /// prompts (already taken out of their text), as files to load.
  static func requested(
    _ arguments: ParsedArguments, promptTags: [LoRATag], negativeTags: [LoRATag]
  ) throws(UsageError) -> [Requested] {
    var requested: [Requested] = []
    for value in arguments.strings("lora") {
      var path = value
      var scale: Float = 1
      if let colon = value.lastIndex(of: ":"),
        let parsed = Float(value[value.index(after: colon)...])
      {
        guard parsed.isFinite else {
          throw UsageError("--lora: the scale of '\(value)' is not finite")
        }
        path = String(value[..<colon])
        scale = parsed
      }
      guard FileManager.default.fileExists(atPath: path) else {
        throw UsageError("--lora: no such file '\(path)'")
      }
      let url = URL(fileURLWithPath: path)
      requested.append(
        Requested(
          url: url, tag: LoRATag(name: url.deletingPathExtension().lastPathComponent, scale: scale),
          source: "lora"))
    }
    let tags = promptTags.map { ($0, "prompt") } + negativeTags.map { ($0, "negative-prompt") }
    guard let first = tags.first?.0 else { return requested }
    guard let folder = arguments.string("lora-dir") else {
      throw UsageError(
        "\(first.text) in a prompt needs --lora-dir DIR to find \(first.name).safetensors")
    }
    for (tag, source) in tags {
      let url = URL(fileURLWithPath: folder).appendingPathComponent("\(tag.name).safetensors")
      guard FileManager.default.fileExists(atPath: url.path) else {
        throw UsageError(
          "--\(source): \(tag.text): no \(tag.name).safetensors in --lora-dir '\(folder)'")
      }
      requested.append(Requested(url: url, tag: tag, source: source))
    }
    return requested
  }

  /// The tags the PNG parameters' prompt line needs besides the prompt as typed: those of `--lora`
  /// and of the negative prompts (the web UIs read LoRAs from the prompt line).
  static func extraPromptTags(_ requested: [Requested]) -> [String] {
    requested.filter { $0.source != "prompt" }.map(\.tag.text)
  }

  /// `pipeline` with the requested LoRAs applied (each file read once).
  static func apply(
    _ requested: [Requested], to pipeline: StableDiffusionPipeline, ignoringUnknown: Bool,
    reporter: ProgressReporter
  ) throws -> StableDiffusionPipeline {
    guard !requested.isEmpty else { return pipeline }
    var loaded: [URL: LoRA] = [:]
    var adapters: [ScaledLoRA] = []
    for item in requested {
      let lora: LoRA
      if let known = loaded[item.url] {
        lora = known
      } else {
        do { lora = try LoRA(contentsOf: item.url) } catch {
          throw UsageError("--\(item.source): \(error)")
        }
        loaded[item.url] = lora
      }
      adapters.append(ScaledLoRA(lora, scale: item.tag.scale))
    }
    let result = try pipeline.applying(adapters, ignoringUnknownLayers: ignoringUnknown)
    if !result.ignoredLoRAKeys.isEmpty {
      reporter.warn(
        "\(result.ignoredLoRAKeys.count) LoRA layers match no layer of this model and were skipped, e.g. \(result.ignoredLoRAKeys[0])"
      )
    }
    reporter.note(
      "LoRA: " + requested.map { "\($0.tag.name) × \($0.tag.scale)" }.joined(separator: ", "))
    return result
  }
}

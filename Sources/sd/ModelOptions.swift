// The options that choose and load the model, shared by generate, batch and grid.

import Foundation
import SDPipeline

enum ModelOptions {
  static let specs: [OptionSpec] = [
    OptionSpec(
      name: "model", valueName: "PATH", defaultValue: nil,
      help: "diffusers model folder, or an SD 1.x or SDXL single-file .safetensors checkpoint"),
    OptionSpec(
      name: "config", valueName: "DIR", defaultValue: "SD 1.5",
      help:
        "single-file checkpoints: take configs, tokenizer and scheduler from this diffusers folder"
    ),
    OptionSpec(
      name: "fp16-weights", valueName: nil, defaultValue: nil,
      help: "keep the weights in half precision in memory (half the memory, a little slower)"),
  ]

  /// `--model`, which must be given and exist; no stray positional arguments before it.
  static func model(_ arguments: ParsedArguments, allowingPositional: Bool = false)
    throws(UsageError) -> URL
  {
    guard allowingPositional || arguments.positional.isEmpty else {
      throw UsageError("unexpected argument '\(arguments.positional[0])' (options start with --)")
    }
    guard let model = try arguments.existingPath("model") else {
      throw UsageError("--model is required (a diffusers model folder)")
    }
    return model
  }

  /// The pipeline of `model` as `--config` and `--fp16-weights` ask.
  static func load(_ model: URL, _ arguments: ParsedArguments) throws -> StableDiffusionPipeline {
    try StableDiffusionPipeline(
      modelAt: model, configurationsFrom: try arguments.existingPath("config"),
      halfPrecisionWeights: arguments.has("fp16-weights"))
  }
}

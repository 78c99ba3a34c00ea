// The text encoders of a model as one prompt encoder. SD 1.x/2.x have one; SDXL has CLIP ViT-L
// and OpenCLIP ViT-bigG, whose penultimate states are put side by side along the feature axis
// (768 + 1280 = 2048, the UNet's cross-attention width) and whose second encoder's pooled,
// projected state feeds SDXL's added embedding, as diffusers' StableDiffusionXLPipeline
// `encode_prompt` does.

import SDModels
import SDTensor

/// Encodes a prompt with every text encoder of a model and joins the results.
public struct PromptEncoders: Sendable {
  /// The encoders, in the model's order (`text_encoder`, `text_encoder_2`).
  public let encoders: [PromptEncoder]

  /// The encoders of one model.
  /// - Precondition: at least one encoder.
  public init(_ encoders: [PromptEncoder]) {
    precondition(!encoders.isEmpty, "a model has at least one text encoder")
    self.encoders = encoders
  }

  /// The width of the joined states (the UNet's `cross_attention_dim`).
  public var width: Int { encoders.reduce(0) { $0 + $1.textEncoder.configuration.hiddenSize } }

  /// `text` through every encoder (SDXL: `second` through the second one, when given, as
  /// diffusers' `prompt_2`): the states `[1, 77·k, width]` side by side, the tokens cut (the
  /// first encoder's), and the last pooled embedding there is.
  /// A text with fewer 75-token chunks than the other is padded with its encoder's empty
  /// chunks, as shorter rows are (the states are joined token by token).
  public func encode(
    _ text: String, second: String? = nil, truncate: Bool = false, parsesWeights: Bool = true,
    clipSkip: Int = 0, options: ComputeOptions
  ) -> PromptEncoder.Encoding {
    var parts = encoders.enumerated().map { index, encoder in
      encoder.encode(
        index == 1 ? second ?? text : text, truncate: truncate, parsesWeights: parsesWeights,
        clipSkip: clipSkip, options: options)
    }
    let chunks = parts.map(\.chunks).max() ?? 1
    for index in parts.indices where parts[index].chunks < chunks {
      let empty = encoders[index].emptyChunk(clipSkip: clipSkip, options: options)
      parts[index].embeddings = concatenate(
        [parts[index].embeddings]
          + Array(repeating: empty, count: chunks - parts[index].chunks), axis: 1)
    }
    return joined(parts)
  }

  /// The empty prompt "" through every encoder (one chunk), with its pooled embedding.
  public func emptyPrompt(clipSkip: Int = 0, options: ComputeOptions) -> PromptEncoder.Encoding {
    joined(encoders.map { $0.emptyPrompt(clipSkip: clipSkip, options: options) })
  }

  private func joined(_ parts: [PromptEncoder.Encoding]) -> PromptEncoder.Encoding {
    guard parts.count > 1 else { return parts[0] }
    precondition(
      Set(parts.map { $0.embeddings.shape[1] }).count == 1, "encoders chunked a prompt apart")
    return PromptEncoder.Encoding(
      embeddings: concatenate(parts.map(\.embeddings), axis: 2), cutTokens: parts[0].cutTokens,
      pooled: parts.compactMap(\.pooled).last)
  }
}

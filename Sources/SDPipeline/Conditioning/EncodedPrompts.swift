// The prompts of one generation as text-encoder states: the positive prompt, each negative
// prompt (or given negative embeddings) with its weight, and the empty prompt where the
// guidance needs it, all brought to one sequence length with encoded empty chunks.

import SDModels
import SDTensor

/// The encoded prompts of a request, ready for `GuidancePlan` to lay out as UNet rows.
struct EncodedPrompts {
  /// `[1, 77·k, hidden]`.
  let positive: Tensor
  /// Each negative's states and weight (empty when the guidance uses no negative prompt).
  let negatives: [(states: Tensor, weight: Float)]
  /// The empty prompt "" when the guidance needs it (see `Guidance.needsEmptyPrompt`); zeros
  /// for SDXL models with `force_zeros_for_empty_prompt` when no negative prompt is given.
  let empty: Tensor?
  /// SDXL: the pooled embeddings of `positive`, each of `negatives` and `empty`; nil for models
  /// whose encoders pool nothing.
  let pooled: (positive: Tensor, negatives: [Tensor], empty: Tensor?)?
  /// Tokens cut by `truncatePrompts`, per side.
  let cutTokens: (positive: [String], negative: [String])

  /// Longest prompt text read. The text encoder runs once per 75 tokens and the UNet's
  /// cross-attention grows with them; 50 000 characters (~12 000 tokens, ~170 chunks) is far
  /// beyond any prompt and still ends in seconds on the tiny model.
  static let maximumCharacters = 50_000

  /// - Parameters:
  ///   - zerosForEmpty: the unconditional row of a request without negative prompts is zeros
  ///     (SDXL's `force_zeros_for_empty_prompt`).
  ///   - cache: where encodings of earlier requests are looked up and kept.
  init(
    _ request: GenerationRequest, encoder: PromptEncoders, zerosForEmpty: Bool = false,
    cache: PromptEncodingCache? = nil, options: ComputeOptions
  ) throws(PipelineError) {
    for (name, text) in [("prompt", request.prompt)]
      + request.allNegativePrompts.map({ ("negativePrompts", $0.text) })
    {
      guard text.count <= Self.maximumCharacters else {
        throw .invalidArgument(
          name: name,
          reason: "\(text.count) characters; at most \(Self.maximumCharacters) are encoded")
      }
      // Deep nesting multiplies weights past Float's range (1.1^1000 = ∞).
      if request.parsesPromptWeights,
        !WeightedPrompt(parsing: text).fragments.allSatisfy({ $0.weight.isFinite })
      {
        throw .invalidArgument(
          name: name,
          reason: "its bracket weights overflow (brackets nested too deeply, or a weight too large)"
        )
      }
    }
    func encode(_ text: String, second: String? = nil) -> PromptEncoder.Encoding {
      let encode = {
        encoder.encode(
          text, second: second, truncate: request.truncatePrompts,
          parsesWeights: request.parsesPromptWeights, clipSkip: request.clipSkip, options: options)
      }
      guard let cache else { return encode() }
      return cache.encoding(PromptEncodingCache.key(text, second: second, request), encode: encode)
    }
    func encodeEmptyChunk() -> PromptEncoder.Encoding {
      let encode = { encoder.emptyPrompt(clipSkip: request.clipSkip, options: options) }
      guard let cache else { return encode() }
      return cache.encoding(PromptEncodingCache.key(nil, request), encode: encode)
    }
    let positive = encode(request.prompt, second: request.prompt2)
    guard request.guidance.usesNegativePrompts else {
      (self.positive, negatives, empty) = (positive.embeddings, [], nil)
      pooled = positive.pooled.map { ($0, [], nil) }
      cutTokens = (positive.cutTokens, [])
      return
    }
    var negatives: [(Tensor, Float)] = []
    var negativePooled: [Tensor] = []
    var negativeCut: [String] = []
    if let embeddings = request.negativePromptEmbeddings {
      guard embeddings.shape == positive.embeddings.shape else {
        throw .invalidArgument(
          name: "negativePromptEmbeddings",
          reason: "shape \(embeddings.shape), expected \(positive.embeddings.shape)")
      }
      negatives.append((embeddings, 1))
      // Given states come without a pooled embedding; SDXL's zeros stand in, as for "".
      if let pooled = positive.pooled { negativePooled.append(Tensor(zeros: pooled.shape)) }
    }
    for (index, negative) in request.allNegativePrompts.enumerated() where !negative.text.isEmpty {
      // SDXL: the second encoder's own negative text goes with the first negative prompt.
      let second = index == 0 ? request.negativePrompt2 : nil
      let encoded = encode(negative.text, second: second)
      negatives.append((encoded.embeddings, negative.weight))
      if let pooled = encoded.pooled { negativePooled.append(pooled) }
      negativeCut += encoded.cutTokens
    }
    // The empty prompt's encoding is one empty chunk, which also pads shorter rows to the
    // longest. It is encoded once, and only when a row needs it.
    guard request.guidance.usesNegativeBranch else {
      // Only NAG uses the negatives, as cross-attention contexts of their own: no row to match.
      (self.positive, self.negatives, empty) = (positive.embeddings, negatives, nil)
      pooled = positive.pooled.map { ($0, negativePooled, nil) }
      cutTokens = (positive.cutTokens, negativeCut)
      return
    }
    let needsEmpty = request.guidance.needsEmptyPrompt(hasNegatives: !negatives.isEmpty)
    let lengths = ([positive.embeddings] + negatives.map(\.0)).map { $0.shape[1] }
    let chunks = lengths.max() ?? CLIPTokenizer.maxLength
    // SDXL without a negative prompt: the unconditional row is zeros, states and pooled alike.
    let zeroed =
      zerosForEmpty && request.negativePrompt == nil && request.negativePrompts.isEmpty
      && request.negativePromptEmbeddings == nil
    let emptyPrompt =
      (needsEmpty && !zeroed) || lengths.contains(where: { $0 < chunks })
      ? encodeEmptyChunk() : nil
    func padded(_ states: Tensor) -> Tensor {
      let missing = (chunks - states.shape[1]) / CLIPTokenizer.maxLength
      guard missing > 0, let emptyChunk = emptyPrompt?.embeddings else { return states }
      return concatenate([states] + Array(repeating: emptyChunk, count: missing), axis: 1)
    }
    self.positive = padded(positive.embeddings)
    self.negatives = negatives.map { (padded($0.0), $0.1) }
    if needsEmpty, zeroed {
      empty = Tensor(zeros: self.positive.shape)
    } else {
      empty = needsEmpty ? emptyPrompt.map { padded($0.embeddings) } : nil
    }
    pooled = positive.pooled.map { positivePooled in
      let emptyPooled =
        needsEmpty ? (zeroed ? Tensor(zeros: positivePooled.shape) : emptyPrompt?.pooled) : nil
      return (positivePooled, negativePooled, emptyPooled)
    }
    cutTokens = (positive.cutTokens, negativeCut)
  }
}

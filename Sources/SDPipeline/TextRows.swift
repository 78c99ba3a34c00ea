// The text rows of the UNet batch for a request: the positive prompt, each negative prompt and
// the empty prompt as the guidance rule needs them, all brought to one sequence length, and
// which rows run at which step (a negative-prompt schedule swaps the negatives for the empty
// prompt outside its steps).

import SDModels
import SDTensor

/// The encoded prompts of one generation and the UNet batch layout per step.
struct TextRows {
  /// The rows of one UNet call: `[unconditional?, negatives..., positive]`.
  struct Batch {
    let context: Tensor
    let hasUnconditional: Bool
    let negativeWeights: [Float]
    var count: Int { context.shape[0] }

    /// Splits the UNet output by row and applies the guidance rule.
    func guide(_ prediction: Tensor, _ guidance: ClassifierFreeGuidance, rule: GuidanceRule)
      -> Tensor
    {
      let parts = chunk(prediction, count, axis: 0)
      guard count > 1 else { return parts[0] }
      let negativeStart = hasUnconditional ? 1 : 0
      let negatives = negativeWeights.enumerated().map {
        (parts[negativeStart + $0.offset], $0.element)
      }
      return guidance.combine(
        unconditional: hasUnconditional ? parts[0] : nil, negatives: negatives,
        positive: parts[count - 1],
        rule: negatives.isEmpty ? .classifierFree : rule)
    }
  }

  /// Rows while the negative prompts apply, and outside their steps.
  let inside: Batch
  let outside: Batch
  let negativeSteps: ClosedRange<Int>?
  let cutTokens: (positive: [String], negative: [String])

  func rows(atStep step: Int) -> Batch {
    guard let negativeSteps else { return inside }
    return negativeSteps.contains(step) ? inside : outside
  }

  init(
    _ request: GenerationRequest, pipeline: StableDiffusionPipeline, usesNegativeBranch: Bool,
    options: ComputeOptions
  ) throws(PipelineError) {
    let encoder = try PromptEncoder(
      tokenizer: pipeline.tokenizer, textEncoder: pipeline.textEncoder,
      embeddings: request.embeddings)
    func encode(_ text: String) -> PromptEncoder.Encoding {
      encoder.encode(
        text, truncate: request.truncatePrompts, parsesWeights: request.parsesPromptWeights,
        clipSkip: request.clipSkip, options: options)
    }
    let positive = encode(request.prompt)
    negativeSteps = request.negativeSteps
    guard usesNegativeBranch else {
      inside = Batch(context: positive.embeddings, hasUnconditional: false, negativeWeights: [])
      outside = inside
      cutTokens = (positive.cutTokens, [])
      return
    }
    var negatives: [(Tensor, Float)] = []
    var negativeCut: [String] = []
    if let embeddings = request.negativePromptEmbeddings {
      guard embeddings.shape == positive.embeddings.shape else {
        throw .invalidArgument(
          name: "negativePromptEmbeddings",
          reason: "shape \(embeddings.shape), expected \(positive.embeddings.shape)")
      }
      negatives.append((embeddings, 1))
    }
    for negative in request.allNegativePrompts where !negative.text.isEmpty {
      let encoded = encode(negative.text)
      negatives.append((encoded.embeddings, negative.weight))
      negativeCut += encoded.cutTokens
    }
    // The empty prompt stands in where no negative applies, and is Perp-Neg's reference; its
    // encoding is one empty chunk, which also pads shorter rows to the longest. It is encoded
    // once, and only when one of those needs it.
    let needsEmpty =
      negatives.isEmpty || request.guidanceRule == .perpNeg || request.negativeSteps != nil
    let lengths = ([positive.embeddings] + negatives.map(\.0)).map { $0.shape[1] }
    let chunks = lengths.max() ?? CLIPTokenizer.maxLength
    let emptyChunk =
      needsEmpty || lengths.contains(where: { $0 < chunks })
      ? encoder.emptyChunk(clipSkip: request.clipSkip, options: options) : nil
    func padded(_ embeddings: Tensor) -> Tensor {
      let missing = (chunks - embeddings.shape[1]) / CLIPTokenizer.maxLength
      guard missing > 0, let emptyChunk else { return embeddings }
      return concatenate([embeddings] + Array(repeating: emptyChunk, count: missing), axis: 1)
    }
    let positiveRow = padded(positive.embeddings)
    let emptyRow = needsEmpty ? emptyChunk.map(padded) : nil
    if negatives.isEmpty, let emptyRow {
      inside = Batch(
        context: concatenate([emptyRow, positiveRow], axis: 0), hasUnconditional: true,
        negativeWeights: [])
    } else {
      let withEmpty = request.guidanceRule == .perpNeg
      let rows =
        (withEmpty ? [emptyRow].compactMap { $0 } : []) + negatives.map { padded($0.0) } + [
          positiveRow
        ]
      inside = Batch(
        context: concatenate(rows, axis: 0), hasUnconditional: withEmpty,
        negativeWeights: negatives.map(\.1))
    }
    if let emptyRow {
      outside = Batch(
        context: concatenate([emptyRow, positiveRow], axis: 0), hasUnconditional: true,
        negativeWeights: [])
    } else {
      outside = inside
    }
    cutTokens = (positive.cutTokens, negativeCut)
  }
}

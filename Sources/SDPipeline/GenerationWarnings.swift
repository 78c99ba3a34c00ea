// Settings that run without error but would act unseen: the caller hears of them before a run
// (`StableDiffusionPipeline.warnings(for:)`) and finds them in the result.

import SDModels

extension StableDiffusionPipeline {
  /// What in `request` would silently do nothing or something else than it seems: an embedding
  /// used by no prompt (names are matched as whole words), one named like an ordinary word
  /// (every use of the word becomes it), two of one name, and negative prompts that no step
  /// uses (classifier-free guidance at scale ≤ 1 runs no negative row, nor on an LCM checkpoint,
  /// whose UNet takes the scale as an input).
  public func warnings(for request: GenerationRequest) -> [String] {
    var warnings: [String] = []
    let texts = ([request.prompt] + request.allNegativePrompts.map(\.text)).map { $0.lowercased() }
    var seen: Set<String> = []
    var named: Set<String> = []
    for embedding in request.embeddings {
      let name = embedding.name.lowercased()
      // SDXL files hold one vector set per text encoder under one name.
      if !seen.insert("\(name) \(embedding.encoderIndex ?? -1)").inserted {
        warnings.append("two embeddings are named '\(embedding.name)'; the last one is used")
      }
      guard named.insert(name).inserted else { continue }
      // PromptEncoder's rule: a word is a run of letters, digits, "_" and "-".
      let used = texts.contains { text in
        text.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
          .contains { $0 == Substring(name) }
      }
      if !used {
        warnings.append(
          "the embedding '\(embedding.name)' appears in no prompt (write its name, e.g. \(embedding.name))"
        )
      } else if tokenizer.encode(name, addSpecialTokens: false).count == 1 {
        warnings.append(
          "the embedding '\(embedding.name)' is named like an ordinary word: every '\(embedding.name)' in the prompts uses it"
        )
      }
    }
    let hasNegative =
      request.allNegativePrompts.contains { !$0.text.isEmpty }
      || request.negativePromptEmbeddings != nil
    if hasNegative, unet.configuration.timeConditionDimension != nil, request.guidance.rule != .nag
    {
      warnings.append(
        "the negative prompt has no effect: this model takes the guidance scale as an input (an LCM checkpoint) and runs no negative branch; use the nag rule"
      )
    } else if hasNegative, !request.guidance.usesNegativePrompts {
      warnings.append(
        "the negative prompt has no effect at guidance scale \(request.guidance.scale) (≤ 1 runs no negative branch); raise the scale or use the nag rule"
      )
    }
    if textEncoder2 == nil, request.prompt2 != nil || request.negativePrompt2 != nil {
      warnings.append(
        "the second prompts (prompt 2, negative prompt 2) have no effect: only SDXL models have a second text encoder"
      )
    }
    if unet.configuration.textTimeEmbedding == nil,
      request.sizeConditioning != SizeConditioning() || request.negativeSizeConditioning != nil
    {
      warnings.append(
        "the size conditioning (original size, crop, target size) has no effect: only SDXL models take it"
      )
    }
    return warnings
  }
}

// The settings of a generation as the "parameters" PNG text chunk of the common web UIs: the
// prompt line, "Negative prompt: ..." and one line of "Key: value" pairs.

extension GenerationRequest {
  /// The settings in the web UIs' "parameters" format.
  /// - Parameters:
  ///   - sampler: the sampler that ran (`GenerationResult.sampler`).
  ///   - modelName: the model's file or folder name.
  ///   - promptAsWritten: the prompt as the user wrote it, `<lora:…>` tags included (the web
  ///     UIs read LoRAs from the prompt line); nil: `prompt`.
  public func parametersText(
    sampler: SchedulerKind, modelName: String, promptAsWritten: String? = nil
  ) -> String {
    var lines = [promptAsWritten ?? prompt]
    let negatives = allNegativePrompts.filter { !$0.text.isEmpty }
    if !negatives.isEmpty {
      lines.append(
        "Negative prompt: "
          + negatives.map { $0.weight == 1 ? $0.text : "\($0.text):\($0.weight)" }.joined(
            separator: " | "))
    }
    var settings = [
      "Steps: \(steps)", "Sampler: \(sampler.rawValue)", "CFG scale: \(guidance.scale)",
      "Seed: \(seed)", "Model: \(modelName)",
    ]
    if guidance.rescale > 0 { settings.append("CFG rescale: \(guidance.rescale)") }
    if guidance.rule != .classifierFree { settings.append("Guidance: \(guidance.rule.rawValue)") }
    if guidance.rule == .nag {
      let nag = guidance.nag
      settings.append("NAG scale: \(nag.scale), NAG tau: \(nag.tau), NAG alpha: \(nag.alpha)")
      if let steps = nag.steps {
        settings.append("NAG steps: \(steps.lowerBound)-\(steps.upperBound)")
      }
    }
    if let steps = guidance.negativeSteps {
      settings.append("Negative steps: \(steps.lowerBound)-\(steps.upperBound)")
    }
    if initImage != nil { settings.append("Denoising strength: \(strength)") }
    lines.append(settings.joined(separator: ", "))
    return lines.joined(separator: "\n")
  }
}

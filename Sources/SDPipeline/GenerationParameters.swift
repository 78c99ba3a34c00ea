// The settings of a generation as the "parameters" PNG text chunk of the common web UIs
// (AUTOMATIC1111, Forge, and the readers that follow them: Civitai, image browsers):
//
//   <prompt>
//   Negative prompt: <negative>
//   Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15, ...
//
// Keys the web UIs know keep their names and meanings (clip skip counted their way); settings
// they lack (several negatives, guidance rules, NAG) follow as keys of their own, which readers
// keep as they are.

extension SchedulerKind {
  /// The sampler's name in the web UIs ("Euler a", "DPM++ 2M Karras"; PNDM is their "PLMS").
  public var webUIName: String {
    switch self {
    case .ddim: "DDIM"
    case .pndm: "PLMS"
    case .euler: "Euler"
    case .eulerAncestral: "Euler a"
    case .lms: "LMS"
    case .dpmSolverMultistep: "DPM++ 2M"
    case .dpmSolverMultistepKarras: "DPM++ 2M Karras"
    case .dpmSolverMultistepSDEKarras: "DPM++ 2M SDE Karras"
    case .lcm: "LCM"
    case .tcd: "TCD"
    }
  }
}

extension GenerationRequest {
  /// The settings in the web UIs' "parameters" format.
  /// - Parameters:
  ///   - sampler: the sampler that ran (`GenerationResult.sampler`).
  ///   - width: the image's width in pixels.
  ///   - height: the image's height in pixels.
  ///   - modelName: the model's folder or file name (a `.safetensors`/`.ckpt` extension is
  ///     dropped, as the web UIs write it).
  ///   - promptAsWritten: the prompt as the user wrote it, `<lora:…>` tags included (the web
  ///     UIs read LoRAs from the prompt line); nil: `prompt`.
  public func parametersText(
    sampler: SchedulerKind, width: Int, height: Int, modelName: String,
    promptAsWritten: String? = nil
  ) -> String {
    var lines = [promptAsWritten ?? prompt]
    let negatives = allNegativePrompts.filter { !$0.text.isEmpty }
    // One negative prompt is what every reader expects; several (ours are guided apart, each
    // with a weight) are listed in full under a key of their own, after their plain join.
    if !negatives.isEmpty {
      lines.append("Negative prompt: " + negatives.map(\.text).joined(separator: ", "))
    }
    var model = modelName
    for suffix in [".safetensors", ".ckpt"] where model.lowercased().hasSuffix(suffix) {
      model.removeLast(suffix.count)
    }
    var settings: [(String, String)] = [
      ("Steps", "\(steps)"), ("Sampler", sampler.webUIName), ("CFG scale", "\(guidance.scale)"),
      ("Seed", "\(seed)"), ("Size", "\(width)x\(height)"), ("Model", model),
    ]
    if schedule != .automatic { settings.insert(("Schedule type", schedule.webUIName), at: 2) }
    if initImage != nil { settings.append(("Denoising strength", "\(strength)")) }
    // The web UIs count the last layer as 1: diffusers' clip_skip k is their k + 1.
    if clipSkip > 0 { settings.append(("Clip skip", "\(clipSkip + 1)")) }
    if guidance.rescale > 0 { settings.append(("CFG rescale", "\(guidance.rescale)")) }
    if let cutoff = guidance.cutoff { settings.append(("CFG cutoff", "\(cutoff)")) }
    if negatives.count > 1 || negatives.contains(where: { $0.weight != 1 }) {
      settings.append(
        (
          "Negative prompts",
          negatives.map { $0.weight == 1 ? $0.text : "\($0.text):\($0.weight)" }.joined(
            separator: " | ")
        ))
    }
    if guidance.rule != .classifierFree { settings.append(("Guidance", guidance.rule.rawValue)) }
    if guidance.rule == .nag {
      let nag = guidance.nag
      settings += [
        ("NAG scale", "\(nag.scale)"), ("NAG tau", "\(nag.tau)"), ("NAG alpha", "\(nag.alpha)"),
      ]
      if let steps = nag.steps {
        settings.append(("NAG steps", "\(steps.lowerBound)-\(steps.upperBound)"))
      }
    }
    if let steps = guidance.negativeSteps {
      settings.append(("Negative steps", "\(steps.lowerBound)-\(steps.upperBound)"))
    }
    lines.append(settings.map { "\($0.0): \(Self.quotedIfNeeded($0.1))" }.joined(separator: ", "))
    return lines.joined(separator: "\n")
  }

  /// A value as the web UIs write it: in double quotes (with `\` and `"` escaped) when it holds
  /// a comma, colon or quote that would end it early.
  static func quotedIfNeeded(_ value: String) -> String {
    guard value.contains(where: { ",:\"".contains($0) }) else { return value }
    let escaped = value.replacingOccurrences(of: "\\", with: "\\\\")
      .replacingOccurrences(of: "\"", with: "\\\"")
    return "\"\(escaped)\""
  }
}

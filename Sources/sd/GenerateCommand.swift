// `sd --model PATH --prompt TEXT ...`: txt2img / img2img to a PNG, and `--compare`, which renders
// the same seed with and without the negative prompt side by side.

import Foundation
import SDModels
import SDPipeline
import SDTensor

enum GenerateCommand {
  static let specs: [OptionSpec] =
    ModelOptions.specs + [
      OptionSpec(
        name: "prompt", valueName: "TEXT", defaultValue: nil, help: "what the image should show"),
      OptionSpec(
        name: "negative-prompt", valueName: "TEXT[:W]", defaultValue: "\"\"",
        help:
          "what the image should not show; repeat for several, each with an optional weight (\"blur:0.5\")",
        repeatable: true),
      OptionSpec(
        name: "prompt-2", valueName: "TEXT", defaultValue: "--prompt",
        help: "SDXL: the second text encoder's prompt (diffusers' prompt_2)"),
      OptionSpec(
        name: "negative-prompt-2", valueName: "TEXT", defaultValue: "the first --negative-prompt",
        help: "SDXL: the second text encoder's text for the first negative prompt"),
      OptionSpec(
        name: "negative-steps", valueName: "A-B", defaultValue: "every step",
        help: "apply the negative prompts only in steps A to B (1-based)"),
      OptionSpec(
        name: "guidance", valueName: "RULE", defaultValue: "cfg",
        help:
          "how negatives act: cfg, perp-neg (keeps what they share with the prompt), or nag (in attention; works at scale 1 on few-step models)"
      ),
      OptionSpec(
        name: "nag-scale", valueName: "PHI", defaultValue: "\(NormalizedAttentionGuidance().scale)",
        help: "nag: how far the prompt's attention is pushed from the negative's (1 = off)"),
      OptionSpec(
        name: "nag-tau", valueName: "T", defaultValue: "\(NormalizedAttentionGuidance().tau)",
        help: "nag: the largest L1-norm ratio of the guided attention to the prompt's"),
      OptionSpec(
        name: "nag-alpha", valueName: "A", defaultValue: "\(NormalizedAttentionGuidance().alpha)",
        help: "nag: how much of the guided attention is blended in, in [0, 1]"),
      OptionSpec(
        name: "nag-steps", valueName: "A-B", defaultValue: "every step",
        help: "nag: act only in steps A to B (1-based)"),
      OptionSpec(
        name: "embedding", valueName: "FILE", defaultValue: nil,
        help:
          "textual-inversion .safetensors, .pt or .bin (read without running code), used by name in prompts; repeatable",
        repeatable: true),
      OptionSpec(
        name: "truncate", valueName: nil, defaultValue: nil,
        help: "cut prompts at 75 tokens (warns what was cut) instead of encoding them in chunks"),
      OptionSpec(
        name: "no-weights", valueName: nil, defaultValue: nil,
        help: "take ( ) [ ] in prompts literally instead of as (word:1.3) weights"),
      OptionSpec(name: "steps", valueName: "N", defaultValue: "20", help: "denoising steps"),
      OptionSpec(
        name: "guidance-scale", valueName: "S", defaultValue: "\(Guidance.defaultScale)",
        help: "classifier-free guidance scale; <= 1 skips the negative branch"),
      OptionSpec(
        name: "guidance-rescale", valueName: "F", defaultValue: "0",
        help: "guidance rescale phi in [0, 1]"),
      OptionSpec(
        name: "cfg-cutoff", valueName: "F", defaultValue: "off",
        help:
          "stop guidance after this fraction of the steps: the rest run the prompt's row alone, ~45 % faster each"
      ),
      OptionSpec(
        name: "seed", valueName: "N", defaultValue: "0",
        help: "seed of the torch-compatible noise generator"),
      OptionSpec(
        name: "sampler", valueName: "NAME", defaultValue: "the model's scheduler_config.json",
        help: samplerNames),
      OptionSpec(
        name: "timestep-spacing", valueName: "S", defaultValue: "the model's",
        help: "linspace, leading or trailing (SD-Turbo and most few-step models: trailing)"),
      OptionSpec(
        name: "schedule", valueName: "S", defaultValue: "default",
        help:
          "the σs of euler, euler-a, lms and dpm++2m: default, karras, or ays (Align Your Steps, 10 steps is its list)"
      ),
      OptionSpec(
        name: "eta", valueName: "X", defaultValue: "0",
        help: "tcd: gamma in [0, 1], the noise of each step (its authors use 0.3)"),
      OptionSpec(
        name: "width", valueName: "W", defaultValue: "model size (512 for SD 1.5)",
        help: "image width, a multiple of 8"),
      OptionSpec(
        name: "height", valueName: "H", defaultValue: "model size (512 for SD 1.5)",
        help: "image height, a multiple of 8"),
      OptionSpec(
        name: "init-image", valueName: "PNG", defaultValue: nil,
        help: "img2img: start from this image; its size is the default width and height"),
      OptionSpec(
        name: "strength", valueName: "X", defaultValue: "0.8; 1 with --mask",
        help: "img2img: how much to change the image, in (0, 1]"),
      OptionSpec(
        name: "mask", valueName: "PNG", defaultValue: nil,
        help:
          "inpainting: repaint where this image (the init image's size) is white, keep where black"),
      OptionSpec(
        name: "mask-blur", valueName: "N", defaultValue: "0",
        help: "inpainting: blur the mask by a Gaussian of N pixels (softens --keep-unmasked's seam)"
      ),
      OptionSpec(
        name: "only-masked", valueName: "PAD", defaultValue: nil,
        help:
          "inpainting: repaint only the region around the mask (PAD pixels around it; the web UIs use 32), generated at --width x --height (default: the model's size) and pasted back"
      ),
      OptionSpec(
        name: "keep-unmasked", valueName: nil, defaultValue: nil,
        help: "inpainting: put the init image's pixels back outside the mask, blended by the mask"),
      OptionSpec(
        name: "clip-skip", valueName: "N", defaultValue: "0",
        help: "skip the last N text-encoder layers"),
      OptionSpec(
        name: "original-size", valueName: "WxH", defaultValue: "the image's size",
        help:
          "SDXL micro-conditioning: the size the model should take the picture to come from (small sizes look upscaled)"
      ),
      OptionSpec(
        name: "crop", valueName: "X,Y", defaultValue: "0,0",
        help: "SDXL micro-conditioning: the crop offset (left, top) the picture should look cut at"
      ),
      OptionSpec(
        name: "target-size", valueName: "WxH", defaultValue: "the image's size",
        help: "SDXL micro-conditioning: the size the picture is meant for"),
      OptionSpec(
        name: "negative-original-size", valueName: "WxH", defaultValue: "as --original-size",
        help:
          "SDXL: the original size of the negative rows (with the two below; unset ones: the image's size, 0,0)"
      ),
      OptionSpec(
        name: "negative-crop", valueName: "X,Y", defaultValue: "as --crop",
        help: "SDXL: the crop offset of the negative rows"),
      OptionSpec(
        name: "negative-target-size", valueName: "WxH", defaultValue: "as --target-size",
        help: "SDXL: the target size of the negative rows"),
      .threads,
      OptionSpec(
        name: "from-png", valueName: "FILE.png", defaultValue: nil,
        help:
          "take the prompt and settings from a PNG's parameters (ours or a web UI's); options given here win"
      ),
      OptionSpec(
        name: "output", valueName: "FILE.png", defaultValue: "output.png",
        help: "where to write the image; - for standard output"),
      OptionSpec(
        name: "overwrite", valueName: nil, defaultValue: nil,
        help: "replace an existing output file"),
      OptionSpec(
        name: "compare", valueName: nil, defaultValue: nil,
        help: "write the image without and with the negative prompt side by side"),
      OptionSpec(
        name: "negative-effect", valueName: "FILE.png", defaultValue: nil,
        help: "also write a heat map of where the negative prompt changed the image"),
      OptionSpec(
        name: "taesd", valueName: "DIR", defaultValue: nil,
        help:
          "decode with TAESD, a diffusers AutoencoderTiny folder (madebyollin/taesd): a few percent of the VAE's time, slightly softer detail"
      ),
      OptionSpec(
        name: "preview", valueName: "FILE.png", defaultValue: nil,
        help:
          "while generating, write the current latents as a PNG every --preview-every steps, each replacing the last atomically; decoded with --taesd, else with the full VAE (slow: a full decode each time)"
      ),
      OptionSpec(
        name: "preview-every", valueName: "N", defaultValue: "1",
        help: "write the --preview after every N-th step"),
      OptionSpec(name: "quiet", valueName: nil, defaultValue: nil, help: "no progress output"),
    ] + LoRAOptions.specs + [.help]

  /// The options of one request (what a batch line or a grid axis may set): all but the
  /// model, output and process ones.
  static let requestSpecs = specs.filter {
    ![
      "model", "config", "threads", "output", "overwrite", "compare", "negative-effect", "quiet",
      "fp16-weights", "lora-ignore-unknown", "help", "from-png", "taesd", "preview",
      "preview-every",
    ].contains($0.name)
  }

  static let usage = "sd --model PATH --prompt TEXT [options]"
  static let samplerNames = SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")

  static func run(_ words: [String], cancellation: Cancellation) throws -> Int32 {
    guard
      var arguments = try parsedOrHelp(
        words, specs: specs, usage: usage,
        summary:
          "Generate an image with Stable Diffusion on the CPU (sd generate, the default command). Other commands: sd batch (one image per line of a JSON-lines file), sd grid (a labelled comparison grid), sd tokenize (a prompt's CLIP tokens), sd verify (compare with activations dumped from diffusers); each takes --help."
      )
    else { return 0 }
    if let png = try arguments.existingPath("from-png") {
      let text: String?
      do { text = try PNGText.read(contentsOf: png)["parameters"] } catch {
        throw UsageError("--from-png: \(error)")
      }
      guard let text else { throw UsageError("--from-png: '\(png.path)' has no parameters text") }
      arguments = try ParsedArguments(
        PNGParameters.words(fromParameters: text), specs: requestSpecs
      ).overridden(by: arguments)
    }
    let model = try ModelOptions.model(arguments)
    let threads = try arguments.threadCount()
    let job = try job(arguments)
    var request = job.request
    let taesd = try arguments.existingPath("taesd")
    if taesd != nil { request.decoder = .tinyAutoencoder }
    let previewEvery = try arguments.int("preview-every", range: 1...1000)
    if previewEvery != nil && !arguments.has("preview") {
      throw UsageError("--preview-every needs --preview FILE.png")
    }
    let overwrite = arguments.has("overwrite")
    let output = try OutputFile(
      option: "output", value: arguments.string("output") ?? "output.png", overwrite: overwrite)
    let heatMap = try arguments.string("negative-effect").map {
      try OutputFile(option: "negative-effect", value: $0, overwrite: overwrite)
    }
    if let heatMap, heatMap.isSameDestination(as: output) {
      throw UsageError("--negative-effect: '\(heatMap.displayName)' is also the --output")
    }
    var options = Runtime.configure(threads: threads)
    options.cancellation = cancellation.flag
    let quiet = arguments.has("quiet")
    let reporter = ProgressReporter(quiet: quiet)
    let preview = try arguments.string("preview").map {
      try PreviewFile(
        $0, overwrite: overwrite, others: [output] + (heatMap.map { [$0] } ?? []),
        reporter: reporter, cancellation: cancellation)
    }
    if preview != nil { request.previews = PreviewSettings(every: previewEvery ?? 1) }
    reporter.note("loading \(model.path)")
    var pipeline = try ModelOptions.load(model, arguments)
    if let taesd {
      do { pipeline = try pipeline.withTinyAutoencoder(at: taesd) } catch {
        guard case .model(let problem) = error else { throw error }
        throw UsageError("--taesd: \(problem)")
      }
    }
    pipeline.warnings(for: request).forEach(reporter.warn)
    pipeline = try LoRAOptions.apply(
      job.loras, to: pipeline, ignoringUnknown: arguments.has("lora-ignore-unknown"),
      reporter: reporter
    )
    if !pipeline.unusedWeights.isEmpty {
      reporter.warn(
        "\(pipeline.unusedWeights.count) tensors of the model were not used, e.g. \(pipeline.unusedWeights.prefix(3).joined(separator: ", "))"
      )
    }

    let stepReport = reporter.callback(cancellation)
    let progress: (GenerationProgress) -> Bool = { step in
      if let image = step.preview { preview?.write(image) }
      return stepReport(step)
    }
    let compare = arguments.has("compare") || heatMap != nil
    var withoutNegative: GenerationResult?
    if compare {
      var plain = request
      plain.negativePrompt = nil
      plain.negativePrompts = []
      plain.guidance.negativeSteps = nil
      reporter.note("rendering without the negative prompt")
      withoutNegative = try pipeline.generate(plain, options: options, progress: progress)
    }
    if compare { reporter.note("rendering with the negative prompt") }
    let result = try pipeline.generate(request, options: options, progress: progress)
    for (label, cut) in [
      ("prompt", result.truncatedTokens.positive),
      ("negative prompt", result.truncatedTokens.negative),
    ] where !cut.isEmpty {
      reporter.warn("the \(label) is longer than 75 tokens; dropped: \(cut.joined(separator: " "))")
    }

    let parameters = [
      (
        "parameters",
        request.parametersText(
          sampler: result.sampler, width: result.image.width, height: result.image.height,
          modelName: model.lastPathComponent,
          promptAsWritten: job.promptAsWritten)
      )
    ]
    var image = result.image
    if arguments.has("compare"), let withoutNegative {
      image = RGBImage.sideBySide(
        withoutNegative.image, result.image, leftLabel: "without negative prompt",
        rightLabel: "negative: " + request.allNegativePrompts.map(\.text).joined(separator: " | "),
        caption:
          "same seed \(request.seed), \(request.steps) steps, scale \(request.guidance.scale)"
      )
    }
    // Both files are on disk before either takes its place; a signal until then means neither.
    var prepared = [try cancellation.prepare(try image.pngData(text: parameters), for: output)]
    if let heatMap, let withoutNegative {
      let effect = RGBImage.differenceHeatMap(withoutNegative.image, result.image)
      do {
        prepared.append(
          try cancellation.prepare(try effect.pngData(text: parameters), for: heatMap))
      } catch {
        prepared.forEach { $0.discard() }
        throw error
      }
    }
    try cancellation.commitAll(prepared)
    if let heatMap { reporter.note("wrote \(heatMap.displayName)") }
    reporter.finish(
      "wrote \(output.displayName) (\(image.width)x\(image.height), \(result.sampler.rawValue), seed \(request.seed))"
    )
    return 0
  }

  /// What one generation asks for: the request, its LoRAs and the prompt as written.
  struct Job {
    var request: GenerationRequest
    var loras: [LoRAOptions.Requested]
    /// The prompt as typed plus the tags of `--lora` and the negatives, for the PNG parameters.
    var promptAsWritten: String

    /// The job for the library's batch runner (a batch line, a grid cell).
    func batchJob(named name: String) -> BatchJob {
      BatchJob(
        name: name, request: request,
        loras: loras.map { LoRAFile(url: $0.url, scale: $0.tag.scale) },
        promptAsWritten: promptAsWritten)
    }
  }

  /// Reads generate's request options (not the model, output or process ones) from
  /// `arguments`: the command line, a batch line or a grid cell.
  static func job(_ arguments: ParsedArguments) throws -> Job {
    guard let prompt = arguments.string("prompt") else { throw UsageError("--prompt is required") }
    // `<lora:NAME:SCALE>` tags leave the prompt texts and name LoRAs to apply.
    let positive = try withoutLoRATags(prompt, option: "prompt")
    var request = GenerationRequest(prompt: positive.text)
    var negativeTags: [LoRATag] = []
    request.negativePrompts = try arguments.strings("negative-prompt").map {
      value throws(UsageError) in
      let negative = try withoutLoRATags(value, option: "negative-prompt")
      negativeTags += negative.tags
      return try negativePrompt(negative.text)
    }
    let loras = try LoRAOptions.requested(
      arguments, promptTags: positive.tags, negativeTags: negativeTags)
    request.guidance.negativeSteps = try arguments.stepRange("negative-steps")
    request.guidance.nag.steps = try arguments.stepRange("nag-steps")
    if let scale = try arguments.float("nag-scale", range: 0...100) {
      request.guidance.nag.scale = scale
    }
    if let tau = try arguments.float("nag-tau", range: 1...100) { request.guidance.nag.tau = tau }
    if let alpha = try arguments.float("nag-alpha", range: 0...1) {
      request.guidance.nag.alpha = alpha
    }
    if let rule = arguments.string("guidance") {
      guard let parsed = GuidanceRule(rawValue: rule) else {
        let names = GuidanceRule.allCases.map(\.rawValue).joined(separator: ", ")
        throw UsageError("--guidance must be one of \(names), got '\(rule)'")
      }
      request.guidance.rule = parsed
    }
    request.truncatePrompts = arguments.has("truncate")
    request.parsesPromptWeights = !arguments.has("no-weights")
    for path in arguments.strings("embedding") {
      guard FileManager.default.fileExists(atPath: path) else {
        throw UsageError("--embedding: no such file '\(path)'")
      }
      request.embeddings += try TextualInversion.load(contentsOf: URL(fileURLWithPath: path))
    }
    request.steps = try arguments.int("steps", default: 20, range: 1...1000) ?? 20
    if let scale = try arguments.float("guidance-scale", range: -100...100) {
      request.guidance.scale = scale
    }
    if let rescale = try arguments.float("guidance-rescale", range: 0...1) {
      request.guidance.rescale = rescale
    }
    request.guidance.cutoff = try arguments.float("cfg-cutoff", range: 0...1)
    request.seed = try arguments.seed("seed") ?? 0
    let maskDefault: Float = arguments.has("mask") ? 1 : 0.8
    request.strength =
      try arguments.float("strength", default: maskDefault, range: 0.000_001...1) ?? maskDefault
    request.clipSkip = try arguments.int("clip-skip", default: 0, range: 0...64) ?? 0
    func sizes(_ prefix: String) throws(UsageError) -> SizeConditioning? {
      let original = try arguments.pair("\(prefix)original-size", separator: "x", form: "WxH")
      let crop = try arguments.pair("\(prefix)crop", separator: ",", form: "X,Y")
      let target = try arguments.pair("\(prefix)target-size", separator: "x", form: "WxH")
      guard original != nil || crop != nil || target != nil else { return nil }
      return SizeConditioning(
        originalSize: original.map { (width: $0.0, height: $0.1) },
        cropTopLeft: crop.map { (left: $0.0, top: $0.1) } ?? (0, 0),
        targetSize: target.map { (width: $0.0, height: $0.1) })
    }
    request.prompt2 = arguments.string("prompt-2")
    request.negativePrompt2 = arguments.string("negative-prompt-2")
    request.sizeConditioning = try sizes("") ?? SizeConditioning()
    request.negativeSizeConditioning = try sizes("negative-")
    if let name = arguments.string("sampler") {
      guard let sampler = SchedulerKind(name: name) else {
        throw UsageError("--sampler: unknown sampler '\(name)' (\(samplerNames))")
      }
      request.sampler = sampler
    }
    if let spacing = arguments.string("timestep-spacing") {
      guard let parsed = TimestepSpacing(rawValue: spacing) else {
        throw UsageError(
          "--timestep-spacing must be linspace, leading or trailing, got '\(spacing)'")
      }
      request.timestepSpacing = parsed
    }
    if let name = arguments.string("schedule") {
      guard let schedule = ScheduleType(rawValue: name.lowercased()) else {
        throw UsageError(
          "--schedule must be \(ScheduleType.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'"
        )
      }
      request.schedule = schedule
    }
    if let eta = try arguments.float("eta", range: 0...1) { request.eta = eta }
    for name in ["width", "height"] {
      if let value = try arguments.int(name, range: 8...4096) {
        guard value % 8 == 0 else {
          throw UsageError("--\(name) must be a multiple of 8, got \(value)")
        }
        if name == "width" { request.width = value } else { request.height = value }
      }
    }
    if let initPath = try arguments.existingPath("init-image") {
      let image = try RGBImage(contentsOf: initPath)
      request.initImage = image
      // "Only masked" generates the crop at the model's size unless a size is given.
      if !arguments.has("only-masked") {
        request.width = request.width ?? image.width
        request.height = request.height ?? image.height
      }
      guard image.width % 8 == 0, image.height % 8 == 0 else {
        throw UsageError(
          "--init-image: \(image.width)x\(image.height) is not a multiple of 8 in both sides; crop or resize it"
        )
      }
    }
    if let maskPath = try arguments.existingPath("mask") {
      let blur = try arguments.int("mask-blur", default: 0, range: 0...64) ?? 0
      request.mask = InpaintingMask(try RGBImage(contentsOf: maskPath)).blurred(radius: blur)
      request.keepsUnmaskedPixels = arguments.has("keep-unmasked")
      request.onlyMaskedPadding = try arguments.int("only-masked", range: 0...4096)
    } else {
      for option in ["mask-blur", "keep-unmasked", "only-masked"] where arguments.has(option) {
        throw UsageError("--\(option) needs --mask")
      }
    }

    return Job(
      request: request, loras: loras,
      promptAsWritten: ([prompt] + LoRAOptions.extraPromptTags(loras)).joined(separator: " "))
  }

  /// `text` without its `<lora:…>` tags, and the tags.
  static func withoutLoRATags(_ text: String, option: String) throws(UsageError) -> (
    text: String, tags: [LoRATag]
  ) {
    do { return try LoRATag.extract(from: text) } catch {
      guard case .invalidArgument(_, let reason) = error else { throw UsageError("\(error)") }
      throw UsageError("--\(option): \(reason)")
    }
  }

  /// "text" or "text:weight" (a trailing `:number` is the weight; `(word:1.3)` inside stays
  /// prompt syntax because it ends with ")").
  static func negativePrompt(_ value: String) throws(UsageError) -> NegativePrompt {
    if let colon = value.lastIndex(of: ":"), let weight = Float(value[value.index(after: colon)...])
    {
      guard weight.isFinite, weight > 0 else {
        throw UsageError("--negative-prompt: weight must be a positive number, got \(weight)")
      }
      return NegativePrompt(String(value[..<colon]), weight: weight)
    }
    return NegativePrompt(value)
  }
}

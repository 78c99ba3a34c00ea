// `sd verify --model DIR --activations FILE`: runs our code on the inputs that
// weights/dump_activations.py recorded from diffusers and compares every recorded activation,
// so a user can see whether (and where) this runtime diverges from PyTorch on their model.

import Foundation
import SDModels
import SDPipeline
import SDTensor

enum VerifyCommand {
  static let specs: [OptionSpec] = [
    OptionSpec(
      name: "model", valueName: "PATH", defaultValue: nil,
      help: "the diffusers model folder that was dumped"),
    OptionSpec(
      name: "activations", valueName: "FILE", defaultValue: nil,
      help: "output of weights/dump_activations.py"),
    OptionSpec(
      name: "tolerance", valueName: "R", defaultValue: "1e-4",
      help: "pass when max |ours - ref| <= R * max(1, max |ref|)"),
    .threads,
    OptionSpec(
      name: "json", valueName: nil, defaultValue: nil,
      help: "print the rows as JSON lines instead of a table"),
    .help,
  ]

  /// One compared tensor.
  struct Row {
    let component: String
    let name: String
    let shape: [Int]
    let maxAbsolute: Float
    let maxRelative: Float
    let passed: Bool
  }

  static func run(_ words: [String]) throws -> Int32 {
    guard
      let arguments = try parsedOrHelp(
        words, specs: specs, usage: "sd verify --model PATH --activations FILE [--json]",
        summary:
          "Compare this runtime with activations dumped from diffusers (weights/dump_activations.py)."
      )
    else { return 0 }
    guard let model = try arguments.existingPath("model") else {
      throw UsageError("--model is required")
    }
    guard let activationsURL = try arguments.existingPath("activations") else {
      throw UsageError("--activations is required")
    }
    let tolerance = try arguments.float("tolerance", default: 1e-4, range: 0...1) ?? 1e-4
    let threads = try arguments.threadCount()
    let options = Runtime.configure(threads: threads)

    let reference: SafeTensorsFile
    do { reference = try SafeTensorsFile(path: activationsURL.path) } catch {
      throw UsageError("--activations: \(error)")
    }
    guard let settingsText = reference.metadata["settings"],
      let settings = try? JSONValue.parse(Array(settingsText.utf8))
    else {
      throw UsageError(
        "--activations: \(activationsURL.path) has no settings metadata (was it written by dump_activations.py?)"
      )
    }
    let pipeline = try StableDiffusionPipeline(modelAt: model)

    var rows: [Row] = []
    func check(_ component: String, _ name: String, _ ours: Tensor) throws {
      let difference = compare(ours, try reference.tensor(name), name: name)
      rows.append(
        Row(
          component: component, name: name, shape: difference.shape,
          maxAbsolute: difference.maxAbsolute, maxRelative: difference.maxRelative,
          passed: difference.isWithin(tolerance)))
    }

    // Tokenizers and text encoders (SDXL: both, and the second one's pooled projection), on
    // both prompts.
    var encoders = [("", pipeline.tokenizer, pipeline.textEncoder)]
    if let tokenizer2 = pipeline.tokenizer2, let textEncoder2 = pipeline.textEncoder2 {
      encoders.append(("_2", tokenizer2, textEncoder2))
    }
    for (suffix, tokenizer, encoder) in encoders {
      let component = "text_encoder\(suffix)"
      for (label, key) in [("prompt", "prompt"), ("negative_prompt", "negative")] {
        let text = settings[label]?.stringValue ?? ""
        let ids = tokenizer.inputIDs(text)
        try check(
          "tokenizer", "inputs.\(key)_ids\(suffix)",
          Tensor(shape: [ids.count], scalars: ids.map(Float.init)))
        let states = encoder.hiddenStates([ids], options: options)
        for (layer, state) in states.enumerated() {
          try check(component, "\(component).\(key).hidden.\(layer)", state)
        }
        try check(
          component, "\(component).\(key).last_hidden_state", encoder([ids], options: options))
        if encoder.textProjection != nil {
          let (_, pooled) = encoder.encode(
            tokenEmbeddings: encoder.tokenEmbeddings(ids), output: .finalNormed, skipLastLayers: 0,
            eosPosition: ids.firstIndex(of: tokenizer.eosID) ?? 0, options: options)
          if let pooled { try check(component, "\(component).\(key).text_embeds", pooled) }
        }
      }
    }

    // The UNet at the first step, on the recorded inputs, block by block.
    let timesteps = try reference.tensor("inputs.timesteps").scalars
    let sample = try reference.tensor("unet.step0.sample")
    var blocks: [String: Tensor] = [:]
    var added: AddedConditions?
    if pipeline.unet.configuration.textTimeEmbedding != nil {
      let timeIDs = try reference.tensor("unet.step0.time_ids")
      added = AddedConditions(
        textEmbeds: try reference.tensor("unet.step0.text_embeds"),
        timeIDs: (0..<timeIDs.shape[0]).map { Array(timeIDs.scalars[$0 * 6..<($0 + 1) * 6]) })
    }
    let output = pipeline.unet(
      sample, timesteps: Array(repeating: timesteps[0], count: sample.shape[0]),
      context: CrossAttentionContext(try reference.tensor("unet.step0.encoder_hidden_states")),
      added: added, options: options
    ) { blocks[$0] = $1 }
    let unetBlocks =
      ["time_embedding", "add_embedding", "conv_in"]
      + (0..<pipeline.unet.downBlocks.count).map { "down_blocks.\($0)" } + ["mid_block"]
      + (0..<pipeline.unet.upBlocks.count).map { "up_blocks.\($0)" }
    for name in unetBlocks {
      if let value = blocks[name] { try check("unet", "unet.step0.\(name)", value) }
    }
    try check("unet", "unet.step0.out", output)

    // The whole sampling loop from the recorded initial latents: guidance and scheduler.
    var request = GenerationRequest(prompt: settings["prompt"]?.stringValue ?? "")
    request.negativePrompt = settings["negative_prompt"]?.stringValue
    request.seed = UInt64(settings["seed"]?.intValue ?? 0)
    request.steps = settings["steps"]?.intValue ?? 1
    if let scale = settings["guidance_scale"]?.doubleValue { request.guidance.scale = Float(scale) }
    request.width = settings["width"]?.intValue
    request.height = settings["height"]?.intValue
    if let className = settings["scheduler"]?.stringValue {
      guard let kind = SchedulerKind(className: className) else {
        throw UsageError("--activations: unsupported scheduler \(className)")
      }
      request.sampler = kind
    }
    var predictions: [Tensor] = []
    var latents: [Tensor] = []
    let result = try pipeline.generate(request, options: options) { progress in
      predictions.append(progress.noisePrediction)
      latents.append(progress.latents)
      return true
    }
    try check("sampler", "inputs.latents", result.initialLatents)
    for (index, (prediction, step)) in zip(predictions, latents).enumerated() {
      try check("guidance", "guidance.noise_pred.\(index)", prediction)
      try check("sampler", "latents.\(index)", step)
    }

    // The VAE decoder on the recorded final latents.
    let finalLatents = try reference.tensor("latents.\(latents.count - 1)")
    var decoderBlocks: [String: Tensor] = [:]
    let image = pipeline.vae.decoder(
      finalLatents * (1 / pipeline.vae.configuration.scalingFactor), options: options
    ) { decoderBlocks[$0] = $1 }
    for name in ["conv_in", "mid_block"]
      + (0..<pipeline.vae.decoder.upBlocks.count).map({ "up_blocks.\($0)" })
    {
      if let value = decoderBlocks[name] { try check("vae", "vae.decoder.\(name)", value) }
    }
    try check("vae", "vae.image", image)

    report(rows, json: arguments.has("json"), tolerance: tolerance)
    return rows.allSatisfy(\.passed) ? 0 : 1
  }

  static func report(_ rows: [Row], json: Bool, tolerance: Float) {
    if json {
      for row in rows {
        let fields: [String: JSONValue] = [
          "component": .string(row.component), "tensor": .string(row.name),
          "shape": .array(row.shape.map { .integer($0) }),
          "max_abs": .number(Double(row.maxAbsolute)), "max_rel": .number(Double(row.maxRelative)),
          "pass": .bool(row.passed),
        ]
        print(JSONValue.object(fields).serialized)
      }
      return
    }
    func pad(_ text: String, _ width: Int) -> String {
      text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0)
    }
    print(
      pad("component", 13) + pad("tensor", 42) + pad("shape", 21) + pad("max |Δ|", 12)
        + pad("max rel Δ", 12) + "result")
    for row in rows {
      print(
        pad(row.component, 13) + pad(row.name, 42) + pad("\(row.shape)", 21)
          + pad(String(format: "%.3g", row.maxAbsolute), 12)
          + pad(String(format: "%.3g", row.maxRelative), 12)
          + (row.passed ? "pass" : "FAIL"))
    }
    let failed = rows.filter { !$0.passed }
    if let first = failed.first {
      print(
        "\n\(failed.count) of \(rows.count) rows FAIL (tolerance \(tolerance) x max(1, max|ref|)); the first divergence is \(first.component): \(first.name)"
      )
    } else {
      print("\nall \(rows.count) rows pass (tolerance \(tolerance) x max(1, max|ref|))")
    }
  }
}

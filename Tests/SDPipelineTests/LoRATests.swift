// LoRA files in every layout we read, against diffusers' `load_lora_weights` + `fuse_lora` on the
// tiny SD 1.5 model (weights/make_lora_fixtures.py), and the errors of files that do not fit.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let loraReference = Result { try fixture("lora-sd15.safetensors") }

private func lora(_ name: String) throws -> LoRA {
  try LoRA(contentsOf: fixturesDirectory.appendingPathComponent("loras/\(name).safetensors"))
}

/// The cases of the fixture: name -> (LoRA file, scale) pairs.
private let loraCases: [String] = {
  guard let reference = try? loraReference.get(),
    let text = reference.metadata["cases"],
    let cases = try? JSONValue.parse(Array(text.utf8)).objectValue
  else { return [] }
  return cases.keys.sorted()
}()

@Suite("LoRA adapters match diffusers (lora-sd15.safetensors)")
struct LoRATests {
  let request: GenerationRequest = {
    var request = GenerationRequest(
      prompt: "a red apple", negativePrompt: "blurry", steps: 3, seed: 7, sampler: .euler,
      width: 64, height: 64)
    request.parsesPromptWeights = true
    return request
  }()

  @Test(arguments: loraCases)
  func fusedGenerationMatches(name: String) throws {
    let reference = try loraReference.get()
    let cases = try #require(
      try JSONValue.parse(Array((reference.metadata["cases"] ?? "").utf8)).objectValue)
    let adapters = try #require(cases[name]?.arrayValue).map { pair throws -> ScaledLoRA in
      let parts = try #require(pair.arrayValue)
      return ScaledLoRA(
        try lora(try #require(parts[0].stringValue)),
        scale: Float(try #require(parts[1].doubleValue)))
    }
    let pipeline = try tinyPipeline.get().applying(adapters)
    #expect(pipeline.adapters.count == adapters.count)
    let outcome = try expectMatchesReference(pipeline, request, reference: reference, name: name)
    print("lora \(name): max |Δ|/scale \(outcome.worst)")
  }

  /// SD 2.x (linear projections, v-prediction) takes LoRAs through the same code.
  @Test func stableDiffusion2() throws {
    let pipeline = try tinySD2Pipeline.get().applying([ScaledLoRA(try lora("kohya-sd2"))])
    _ = try expectMatchesReference(
      pipeline, request, reference: try loraReference.get(), name: "sd2_kohya_1")
  }

  /// A single-file checkpoint (original key names) takes the same LoRA to the same image as its
  /// diffusers folder: the layers are matched by model name, whatever the file calls them.
  @Test func singleFileCheckpoint() throws {
    let adapters = [ScaledLoRA(try lora("kohya"), scale: 0.7)]
    let single = try StableDiffusionPipeline(
      modelAt: fixturesDirectory.appendingPathComponent("tiny-sd15-single-file.safetensors"),
      configurationsFrom: fixturesDirectory.appendingPathComponent("tiny-sd15")
    ).applying(adapters)
    let folder = try tinyPipeline.get().applying(adapters)
    let options = ComputeOptions(threadCount: 2)
    #expect(
      try single.generate(request, options: options).image
        == folder.generate(request, options: options).image)
  }

  /// Without adapters the run is diffusers' base image, and the base pipeline is left as it was
  /// after a LoRA was applied to a copy of it.
  @Test func baseIsUntouched() throws {
    let base = try tinyPipeline.get()
    let before = try base.generate(request, options: ComputeOptions(threadCount: 2)).image
    _ = try base.applying([ScaledLoRA(try lora("kohya"), scale: 1)])
    _ = try expectMatchesReference(base, request, reference: try loraReference.get(), name: "base")
    #expect(try base.generate(request, options: ComputeOptions(threadCount: 2)).image == before)
  }

  /// Every layout names its layers its own way; each reaches the same layers.
  @Test func layoutsAreRead() throws {
    let kohya = try lora("kohya")
    #expect(kohya.updates.contains { $0.part == .textEncoder })
    #expect(kohya.updates.contains { $0.down.rank == 4 && $0.down.shape[2] == 3 })  // LoCon 3×3
    #expect(kohya.updates.first { $0.layer.hasSuffix("attn1_to_q") }?.alpha == 2)
    #expect(kohya.updates.first { $0.layer.hasSuffix("self_attn_q_proj") }?.alpha == 8)
    let peft = try lora("peft")
    #expect(peft.updates.allSatisfy { $0.alpha == 4 && $0.rank == 2 })  // from the metadata
    let legacy = try lora("legacy")
    #expect(Set(legacy.updates.map(\.layer)) == Set(peft.updates.map(\.layer)))
    #expect(legacy.updates.allSatisfy { $0.alpha == 2 })  // no alphas: α = r
  }

  @Test func badFilesAreNamed() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "lora-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let layer = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    func write(_ tensors: [String: Tensor], _ name: String) throws -> URL {
      let url = folder.appendingPathComponent("\(name).safetensors")
      try SafeTensorsWriter.write(tensors, to: url.path)
      return url
    }
    let down = seededTensor([4, 32], seed: 1)
    let up = seededTensor([32, 4], seed: 2)
    let cases: [([String: Tensor], String)] = [
      ([layer + ".lora_down.weight": down], "no matching up"),
      ([layer + ".lora_up.weight": up], "no matching down"),
      (
        [
          layer + ".lora_down.weight": down,
          layer + ".lora_up.weight": seededTensor([32, 3], seed: 3),
        ],
        "rank mismatch"
      ),
      (
        [
          layer + ".lora_down.weight": Tensor(
            shape: [4, 32], scalars: [.nan] + Array(repeating: 0, count: 127)),
          layer + ".lora_up.weight": up,
        ], "NaN"
      ),
      (["something.else": down], "is not a LoRA key"),
      ([layer + ".hada_w1_a": down], "LoHa"),
    ]
    for (index, (tensors, message)) in cases.enumerated() {
      let url = try write(tensors, "bad\(index)")
      #expect(throws: ModelError.self) { _ = try LoRA(contentsOf: url) }
      do { _ = try LoRA(contentsOf: url) } catch {
        #expect(error.description.contains(message), "\(error)")
        #expect(error.description.contains(url.path))
      }
    }
    // Well-formed, but for a layer the model lacks, or of the wrong shape for its layer.
    let pipeline = try tinyPipeline.get()
    let unknown = try LoRA(
      contentsOf: try write(
        [
          "lora_unet_no_such_layer.lora_down.weight": down,
          "lora_unet_no_such_layer.lora_up.weight": up,
        ],
        "unknown"))
    #expect {
      _ = try pipeline.applying([ScaledLoRA(unknown)])
    } throws: { "\($0)".contains("lora_unet_no_such_layer.lora_down.weight") }
    let ignored = try pipeline.applying([ScaledLoRA(unknown)], ignoringUnknownLayers: true)
    #expect(ignored.ignoredLoRAKeys == ["lora_unet_no_such_layer.lora_down.weight"])
    let misfit = try LoRA(
      contentsOf: try write(
        [
          layer + ".lora_down.weight": seededTensor([4, 31], seed: 4),
          layer + ".lora_up.weight": up,
        ],
        "misfit"))
    #expect {
      _ = try pipeline.applying([ScaledLoRA(misfit)])
    } throws: { "\($0)".contains("does not fit its layer") }
  }
}

@Suite struct LoRATagTests {
  @Test func tagsLeaveThePromptText() throws {
    let (text, tags) = try LoRATag.extract(from: "a cat <lora:style_v2:0.8>, blue <lora:detail>")
    #expect(text == "a cat, blue")
    #expect(tags == [LoRATag(name: "style_v2", scale: 0.8), LoRATag(name: "detail", scale: 1)])
    #expect(tags[0].text == "<lora:style_v2:0.8>" && tags[1].text == "<lora:detail:1>")
    #expect(try LoRATag.extract(from: "no tags (here:1.2)").text == "no tags (here:1.2)")
    for bad in ["<lora::1>", "<lora:x:big>", "<lora:x:0.5:1>", "<lora:x:inf>"] {
      #expect(throws: PipelineError.self) { _ = try LoRATag.extract(from: "a " + bad) }
    }
  }
}

/// `sd --lora` and `<lora:…>` tags give the library's image with the LoRA applied, and the PNG
/// records the LoRAs on its prompt line as the web UIs do.
@Suite(.serialized) struct LoRACommandLineTests {
  let loras = fixturesDirectory.appendingPathComponent("loras")

  @Test func optionAndTagApplyTheLoRA() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let byOption = folder.appendingPathComponent("option.png")
    let result = try runSD(
      quick(byOption, ["--lora", loras.appendingPathComponent("kohya.safetensors").path + ":0.7"]))
    #expect(result.status == 0, "\(result.error)")
    let byTag = folder.appendingPathComponent("tag.png")
    var arguments = quick(byTag, ["--lora-dir", loras.path])
    arguments[arguments.firstIndex(of: "a red apple")!] = "a red apple <lora:kohya:0.7>"
    let tagged = try runSD(arguments)
    #expect(tagged.status == 0, "\(tagged.error)")

    var request = GenerationRequest(prompt: "a red apple", steps: 2, width: 64, height: 64)
    request.seed = 0
    let pipeline = try tinyPipeline.get().applying([
      ScaledLoRA(
        try LoRA(contentsOf: loras.appendingPathComponent("kohya.safetensors")), scale: 0.7)
    ])
    let expected = try pipeline.generate(request, options: ComputeOptions(threadCount: 1)).image
    #expect(try RGBImage(contentsOf: byOption) == expected)
    #expect(try RGBImage(contentsOf: byTag) == expected)
    #expect(
      try RGBImage(contentsOf: byOption)
        != tinyPipeline.get().generate(request, options: ComputeOptions(threadCount: 1)).image)
    let parameters = try #require(try PNGText.read(contentsOf: byOption)["parameters"])
    #expect(parameters.hasPrefix("a red apple <lora:kohya:0.7>\n"), "\(parameters)")
    #expect(
      try PNGText.read(contentsOf: byTag)["parameters"]?.hasPrefix("a red apple <lora:kohya:0.7>\n")
        == true)
  }

  @Test func badLoRAInputIsOneLine() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("x.png")
    var tagged = quick(output)
    tagged[tagged.firstIndex(of: "a red apple")!] = "a red apple <lora:kohya:0.7>"
    var badScale = quick(output)
    badScale[badScale.firstIndex(of: "a red apple")!] = "a red apple <lora:kohya:big>"
    let cases: [([String], String)] = [
      (
        quick(output, ["--lora", folder.appendingPathComponent("none.safetensors").path]),
        "--lora: no such file"
      ),
      (tagged, "needs --lora-dir"),
      (tagged + ["--lora-dir", folder.path], "no kohya.safetensors in --lora-dir"),
      (badScale, "--prompt: <lora:kohya:big>: the scale is not a number"),
      (quick(output, ["--lora", fixturePath("ops.safetensors")]), "--lora: LoRA"),
    ]
    for (arguments, message) in cases {
      let result = try runSD(arguments)
      #expect(result.status == 2, "\(arguments): \(result.error)")
      #expect(result.error.contains(message), "\(result.error)")
      #expect(result.error.split(separator: "\n").count == 1, "\(result.error)")
      #expect(!FileManager.default.fileExists(atPath: output.path))
    }
  }
}

// Inputs found by probing as a hostile user would: configs with values out of their meaning,
// non-finite numbers that would end in a black image, prompts that would run for minutes,
// images too large to decode, and errors that must name the option a user typed.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

/// A copy of tiny-sd15 whose parts are links, with `replacing` files written in.
private func modifiedModel(_ replacing: [String: String]) throws -> URL {
  let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
    "hostile-\(UUID().uuidString)")
  let model = fixturesDirectory.appendingPathComponent("tiny-sd15")
  for part in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
    try FileManager.default.createDirectory(
      at: folder.appendingPathComponent(part), withIntermediateDirectories: true)
    for file in try FileManager.default.contentsOfDirectory(
      atPath: model.appendingPathComponent(part).path)
    {
      let relative = "\(part)/\(file)"
      let target = folder.appendingPathComponent(relative)
      if let text = replacing[relative] {
        try Data(text.utf8).write(to: target)
      } else {
        try FileManager.default.createSymbolicLink(
          at: target, withDestinationURL: model.appendingPathComponent(relative))
      }
    }
  }
  return folder
}

@Suite struct HostileInputTests {
  let options = ComputeOptions(threadCount: 2)
  var request: GenerationRequest {
    GenerationRequest(prompt: "a red apple", steps: 2, width: 64, height: 64)
  }

  /// β outside (0, 1) or decreasing, a non-positive epsilon or VAE scale: refused naming the
  /// file and key (they used to run and write a flat image).
  @Test func configValuesOutOfTheirMeaningAreNamed() throws {
    let unet = try String(
      contentsOf: fixturesDirectory.appendingPathComponent("tiny-sd15/unet/config.json"),
      encoding: .utf8)
    let vae = try String(
      contentsOf: fixturesDirectory.appendingPathComponent("tiny-sd15/vae/config.json"),
      encoding: .utf8)
    let cases: [(String, String, String)] = [
      (
        "scheduler/scheduler_config.json", #"{"_class_name": "DDIMScheduler", "beta_start": 0}"#,
        "beta_start"
      ),
      (
        "scheduler/scheduler_config.json", #"{"_class_name": "DDIMScheduler", "beta_end": 1.2}"#,
        "beta_end"
      ),
      ("scheduler/scheduler_config.json", #"{"beta_start": 0.01, "beta_end": 0.001}"#, "beta_end"),
      (
        "unet/config.json",
        unet.replacingOccurrences(of: #""norm_eps": 1e-05"#, with: #""norm_eps": -1e-05"#),
        "norm_eps"
      ),
      (
        "vae/config.json",
        vae.replacingOccurrences(of: #""scaling_factor": 0.18215"#, with: #""scaling_factor": 0"#),
        "scaling_factor"
      ),
    ]
    for (file, text, key) in cases {
      let folder = try modifiedModel([file: text])
      defer { try? FileManager.default.removeItem(at: folder) }
      #expect(text.contains(key))
      #expect {
        _ = try StableDiffusionPipeline(modelAt: folder)
      } throws: { error in "\(error)".contains("'\(key)'") && "\(error)".contains(file) }
    }
  }

  /// Weights that overflow (here a LoRA of huge values) stop the run at the step where the
  /// latents stop being finite, naming it, instead of decoding a black image.
  @Test func nonFiniteLatentsStopTheRun() throws {
    let huge = Tensor(repeating: 1e30, shape: [4, 32])
    let lora = LoRA(
      name: "overflow",
      updates: [
        LoRA.Update(
          part: .unet, layer: "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
          naming: .dotted, key: "x", down: huge, up: Tensor(repeating: 1e30, shape: [32, 4]),
          alpha: 4)
      ])
    let pipeline = try tinyPipeline.get().applying([ScaledLoRA(lora)])
    #expect {
      _ = try pipeline.generate(request, options: options)
    } throws: { error in
      guard case .nonFinite(let stage, _) = error as? PipelineError else { return false }
      return stage.contains("step 1 of")
    }
  }

  /// A weights file cut short or rewritten while a pipeline uses it is named before its pages
  /// are read again (a shortened mapping would otherwise end the process with SIGBUS).
  @Test func weightFilesChangedDuringUseAreNamed() throws {
    func failure(cutting part: String?, touching touched: String?) throws -> (String, String)? {
      let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
        "changed-\(UUID().uuidString)")
      defer { try? FileManager.default.removeItem(at: folder) }
      try FileManager.default.copyItem(
        at: fixturesDirectory.appendingPathComponent("tiny-sd15"), to: folder)
      func file(_ part: String) -> String {
        folder.appendingPathComponent("\(part)/diffusion_pytorch_model.safetensors").path
      }
      let pipeline = try StableDiffusionPipeline(modelAt: folder)
      _ = try pipeline.generate(request, options: options)
      if let part { try #require(truncate(file(part), 1000) == 0) }
      if let touched {
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
        try #require(utimensat(AT_FDCWD, file(touched), &times, 0) == 0)
      }
      do { _ = try pipeline.generate(request, options: options) } catch {
        guard case .model(.weights(.unreadableFile(let path, let reason))) = error else {
          Issue.record("unexpected \(error)")
          return nil
        }
        return (path.replacingOccurrences(of: folder.path + "/", with: ""), reason)
      }
      return nil
    }
    let cut = try failure(cutting: "unet", touching: nil)
    #expect(cut?.0 == "unet/diffusion_pytorch_model.safetensors")
    #expect(cut?.1.contains("to 1000 bytes while in use") == true, "\(String(describing: cut))")
    let touched = try failure(cutting: nil, touching: "vae")
    #expect(touched?.0 == "vae/diffusion_pytorch_model.safetensors")
    #expect(touched?.1.contains("modified while in use") == true)
  }

  /// Steps × strength that rounds down to no step is refused (it used to index past the
  /// schedule and trap).
  @Test func img2imgWithNoStepIsRefused() throws {
    var request = self.request
    request.steps = 1
    request.strength = 0.5
    request.initImage = RGBImage(width: 64, height: 64, red: 200, green: 10, blue: 10)
    for sampler in [SchedulerKind.pndm, .ddim, .eulerAncestral] {
      request.sampler = sampler
      #expect {
        _ = try tinyPipeline.get().generate(request, options: options)
      } throws: { error in
        guard case .invalidArgument("strength", let reason) = error as? PipelineError else {
          return false
        }
        return reason.contains("runs no step")
      }
    }
  }

  /// An embedding named like a one-token word is warned about (every use of the word becomes
  /// it); one named like no word is not.
  @Test func embeddingNamedLikeAWordIsWarnedAbout() throws {
    let pipeline = try tinyPipeline.get()
    var request = GenerationRequest(prompt: "a cat on a mat, by qxzvbnwkjh")
    request.embeddings = [
      TextualInversion(name: "cat", vectors: Tensor(zeros: [1, 32])),
      TextualInversion(name: "qxzvbnwkjh", vectors: Tensor(zeros: [1, 32])),
    ]
    let warnings = pipeline.warnings(for: request)
    #expect(
      warnings.contains { $0.contains("'cat' is named like an ordinary word") }, "\(warnings)")
    #expect(!warnings.contains { $0.contains("'qxzvbnwkjh'") }, "\(warnings)")
  }

  /// img2img without a size takes the init image's (as `sd` does), not the model's.
  @Test func img2imgTakesTheInitImageSize() throws {
    let start = RGBImage(width: 48, height: 80, red: 200, green: 10, blue: 10)
    let request = GenerationRequest(prompt: "a red apple", steps: 2, initImage: start)
    let result = try tinyPipeline.get().generate(request, options: options)
    #expect(result.image.width == 48 && result.image.height == 80)
  }

  @Test func nonFiniteEmbeddingsAreRefused() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "embedding-\(UUID().uuidString).safetensors")
    defer { try? FileManager.default.removeItem(at: directory) }
    try SafeTensorsWriter.write(
      ["emb_params": Tensor(shape: [1, 32], scalars: [.nan] + Array(repeating: 0, count: 31))],
      to: directory.path)
    #expect {
      _ = try TextualInversion.load(contentsOf: directory)
    } throws: { "\($0)".contains("NaN") }
  }

  /// 2000 nested brackets would weight a token by 1.1^2000 = ∞; a prompt of a million
  /// characters would encode for minutes. Both are refused before any work.
  @Test func runawayPromptsAreRefused() throws {
    let pipeline = try tinyPipeline.get()
    var nested = request
    nested.prompt = String(repeating: "(", count: 2000) + "apple"
    #expect {
      _ = try pipeline.generate(nested, options: options)
    } throws: { "\($0)".contains("overflow") }
    var long = request
    long.prompt = String(repeating: "apple ", count: 10_000)
    #expect {
      _ = try pipeline.generate(long, options: options)
    } throws: { "\($0)".contains("at most 50000") }
  }

  /// A window past the last step would apply nothing, silently.
  @Test func stepWindowsPastTheRunAreRefused() throws {
    var late = request
    late.negativePrompt = "blurry"
    late.guidance.negativeSteps = 5...6
    #expect {
      _ = try tinyPipeline.get().generate(late, options: options)
    } throws: { "\($0)".contains("starts after the last of the 2 steps") }
  }
}

@Suite(.serialized) struct HostileCommandLineTests {
  /// Errors name the option the user typed, not the library's field.
  /// A request too large for what the process may allocate is refused before it starts, naming
  /// the need and the limit; an img2img of a 4096×4096 image under `ulimit -v` used to trap in
  /// the VAE encoder's first allocation.
  @Test func requestsBeyondTheMemoryLimitAreRefused() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let image = folder.appendingPathComponent("big.png")
    try RGBImage(width: 4096, height: 4096, red: 9, green: 9, blue: 9).writePNG(to: image)
    let output = folder.appendingPathComponent("out.png")
    let result = try runSD(
      [
        "--model", tinyModel, "--prompt", "a cat", "--steps", "2", "--init-image", image.path,
        "--quiet", "--output", output.path,
      ], shell: #"ulimit -v 4000000; exec "$0" "$@""#)
    #expect(result.status == 2, "\(result.error)")
    #expect(
      result.error.hasPrefix("sd: a 4096x4096 image with 2 UNet rows needs about ")
        && result.error.contains("GB of working memory")
        && result.error.contains("left under the address-space limit (ulimit -v)"),
      "\(result.error)")
    #expect(!FileManager.default.fileExists(atPath: output.path))
  }

  @Test func errorsNameTheOption() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("x.png")
    let fifo = folder.appendingPathComponent("fifo.safetensors").path
    try #require(mkfifo(fifo, 0o644) == 0)
    let huge = folder.appendingPathComponent("huge.png")
    try RGBImage(width: 8, height: 8, red: 1, green: 2, blue: 3).writePNG(to: huge)
    // Rewrite the IHDR's size to 5000×5000 (and its CRC), as a decompression bomb declares it.
    var bytes = [UInt8](try Data(contentsOf: huge))
    func put(_ value: UInt32, at offset: Int) {
      for i in 0..<4 { bytes[offset + i] = UInt8(value >> (24 - 8 * UInt32(i)) & 0xFF) }
    }
    put(5000, at: 16)
    put(5000, at: 20)
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes[12..<29] {
      crc ^= UInt32(byte)
      for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
    }
    put(crc ^ 0xFFFF_FFFF, at: 29)
    try Data(bytes).write(to: huge)
    for (extra, message) in [
      (["--clip-skip", "9"], "--clip-skip: must be in"),
      (
        ["--negative-prompt", "x", "--negative-steps", "5-6"], "--negative-steps: 5-6 starts after"
      ),
      (["--embedding", fifo], "not a regular file"),
      (["--init-image", huge.path], "images up to 4096x4096"),
    ] {
      let result = try runSD(quick(output, extra))
      #expect(result.status == 2, "\(extra): \(result.error)")
      #expect(result.error.contains(message), "\(result.error)")
    }
  }
}

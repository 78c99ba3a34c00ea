// The `sd` executable as a user runs it: every documented bad input gives a one-line error
// naming the option and exit status 2; --compare, single-file checkpoints, Ctrl-C and
// `sd verify` on the fixture models.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite(.serialized) struct CommandLineTests {
  /// (arguments, text the one-line error must contain). Each is a mistake a user makes.
  static let badInputs: [([String], String)] = [
    (["--frobnicate"], "unknown option --frobnicate"),
    (["--model", tinyModel, "--prompt", "x", "--steps"], "--steps needs a value"),
    (["--model", tinyModel, "--prompt", "x", "--steps", "ten"], "--steps"),
    (["--model", tinyModel, "--prompt", "x", "--steps", "0"], "--steps"),
    (
      ["--model", tinyModel, "--prompt", "x", "--steps", "1000", "--quiet"],
      "steps: 1000 steps do not fit"
    ),
    (["--model", tinyModel, "--prompt", "x", "--width", "100"], "--width must be a multiple of 8"),
    (["--model", tinyModel, "--prompt", "x", "--guidance-scale", "nan"], "--guidance-scale"),
    (["--model", tinyModel, "--prompt", "x", "--strength", "1.5"], "--strength"),
    (
      ["--model", tinyModel, "--prompt", "x", "--sampler", "heun"],
      "--sampler: unknown sampler 'heun'"
    ),
    (["--model", "/no/such/model", "--prompt", "x"], "--model: no such file or folder"),
    (["--prompt", "x"], "--model is required"),
    (["--model", tinyModel], "--prompt is required"),
    (
      ["--model", tinyModel, "--prompt", "x", "--init-image", "/no/such.png"],
      "--init-image: no such file"
    ),
    (
      ["--model", tinyModel, "--prompt", "x", "--output", "/no/such/folder/out.png"],
      "--output: cannot write into"
    ),
    (["--model", tinyModel, "--prompt", "x", "stray"], "unexpected argument 'stray'"),
    (["--model", tinyModel, "--prompt", "x", "--quiet=yes"], "--quiet takes no value"),
    (
      ["--model", tinyModel, "--prompt", "x", "--negative-steps", "5-2"],
      "--negative-steps must be A-B"
    ),
    (
      ["--model", tinyModel, "--prompt", "x", "--guidance", "magic"],
      "--guidance must be one of cfg, perp-neg"
    ),
    (
      ["--model", tinyModel, "--prompt", "x", "--negative-prompt", "blur:-1"],
      "--negative-prompt: weight must be a positive number"
    ),
    (
      ["--model", tinyModel, "--prompt", "x", "--embedding", "/no/such.safetensors"],
      "--embedding: no such file"
    ),
    (
      ["--model", tinyModel, "--prompt", "x", "--steps", "5", "--steps", "6"], "--steps given twice"
    ),
  ]

  @Test("bad input: one line on stderr naming the option, exit 2", arguments: 0..<badInputs.count)
  func badInput(index: Int) throws {
    let (arguments, message) = Self.badInputs[index]
    let result = try runSD(arguments)
    #expect(result.status == 2, "\(arguments): status \(result.status), stderr \(result.error)")
    #expect(result.error.contains(message), "\(arguments): \(result.error)")
    #expect(result.error.split(separator: "\n").count == 1, "\(arguments): \(result.error)")
  }

  @Test func badFilesAreRefusedWithExit2() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let pickle = folder.appendingPathComponent("model.ckpt")
    try Data([0x80, 0x02]).write(to: pickle)
    let notPNG = folder.appendingPathComponent("init.png")
    try Data("not a png".utf8).write(to: notPNG)
    let wrongSize = folder.appendingPathComponent("small.png")
    try RGBImage(width: 8, height: 8, red: 1, green: 2, blue: 3).writePNG(to: wrongSize)
    let oddSize = folder.appendingPathComponent("odd.png")
    try RGBImage(width: 9, height: 8, red: 1, green: 2, blue: 3).writePNG(to: oddSize)
    let existing = folder.appendingPathComponent("exists.png")
    try Data("keep me".utf8).write(to: existing)
    let cases: [([String], String)] = [
      (["--model", pickle.path, "--prompt", "x"], "pickle"),
      (
        quick(folder.appendingPathComponent("a.png"), ["--init-image", notPNG.path]),
        "cannot read image"
      ),
      (
        quick(folder.appendingPathComponent("b.png"), ["--init-image", wrongSize.path]),
        "--init-image: is 8x8"
      ),
      (
        ["--model", tinyModel, "--prompt", "x", "--init-image", oddSize.path],
        "--init-image: 9x8 is not a multiple of 8"
      ),
      (quick(existing), "exists (use --overwrite"),
    ]
    for (arguments, message) in cases {
      let result = try runSD(arguments)
      #expect(result.status == 2, "\(arguments): \(result.error)")
      #expect(result.error.contains(message), "\(arguments): \(result.error)")
    }
    #expect(try String(contentsOf: existing, encoding: .utf8) == "keep me")
  }

  @Test func invalidUTF8ArgumentIsRefused() throws {
    let result = try runSD([], shell: #"exec "$0" --model x --prompt "$(printf 'bad \377')""#)
    #expect(result.status == 2)
    #expect(result.error.contains("not valid UTF-8"))
  }

  /// A full disk, simulated by a 1-block file-size limit: the write fails with a message, and
  /// neither the output nor a temporary file is left.
  @Test func failedWriteLeavesNoFile() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let result = try runSD(quick(output), shell: #"ulimit -f 1; exec "$0" "$@""#)
    #expect(result.status == 2, "\(result.error)")
    #expect(result.error.contains("cannot write"), "\(result.error)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
  }

  @Test func helpListsEveryOptionWithItsDefault() throws {
    let help = try runSD(["--help"])
    #expect(help.status == 0)
    for option in [
      "--model", "--prompt", "--negative-prompt", "--steps", "--guidance-scale", "--seed",
      "--sampler",
      "--width", "--height", "--init-image", "--strength", "--threads", "--output", "--compare",
      "--negative-effect", "--quiet", "--overwrite",
    ] {
      #expect(help.output.contains(option), "\(option) missing from --help")
    }
    #expect(help.output.contains("(default: 20)"))
    let version = try runSD(["--version"])
    #expect(version.status == 0 && version.output.hasPrefix("sd "))
  }

  /// The picture of the negative-prompt guide: twice as wide as the image, with a caption strip,
  /// and the generation parameters in a tEXt chunk.
  @Test func compareWritesSideBySidePNG() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("compare.png")
    let heatMap = folder.appendingPathComponent("effect.png")
    let result = try runSD(
      quick(
        output,
        ["--negative-prompt", "green tones", "--compare", "--negative-effect", heatMap.path]))
    #expect(result.status == 0, "\(result.error)")
    let image = try RGBImage(contentsOf: output)
    #expect(image.width == 128)
    #expect(image.height > 64)
    let text = String(decoding: try Data(contentsOf: output), as: UTF8.self)
    #expect(text.contains("Negative prompt: green tones"))
    let effect = try RGBImage(contentsOf: heatMap)
    #expect(
      effect.width == 64 && effect.pixels.contains { $0 > 0 }, "the negative prompt changed nothing"
    )
  }

  /// Several weighted negatives, a schedule, Perp-Neg and an embedding, with --compare: the
  /// same side-by-side picture, and the settings in the PNG's text.
  @Test func multiNegativeCompare() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("compare.png")
    let embedding = fixturePath("embeddings/bad-hands.safetensors")
    let result = try runSD(
      quick(
        output,
        [
          "--negative-prompt", "green tones:1.0", "--negative-prompt", "bad-hands, (blur:1.2):0.5",
          "--negative-steps", "1-2",
          "--guidance", "perp-neg", "--embedding", embedding, "--compare",
        ]))
    #expect(result.status == 0, "\(result.error)")
    let image = try RGBImage(contentsOf: output)
    #expect(image.width == 128 && image.height > 64)
    let text = String(decoding: try Data(contentsOf: output), as: UTF8.self)
    #expect(text.contains("Negative prompt: green tones, bad-hands, (blur:1.2)\n"))
    #expect(text.contains(#"Negative prompts: "green tones | bad-hands, (blur:1.2):0.5""#))
    #expect(text.contains("Guidance: perp-neg") && text.contains("Negative steps: 1-2"))
  }

  /// An embedding that would act unseen is reported: one used by no prompt, one given twice.
  @Test func unusedOrRepeatedEmbeddingsAreReported() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let embedding = fixturePath("embeddings/bad-hands.safetensors")
    let result = try runSD(
      quick(
        folder.appendingPathComponent("out.png"),
        ["--negative-prompt", "blurry", "--embedding", embedding, "--embedding", embedding]))
    #expect(result.status == 0, "\(result.error)")
    #expect(result.error.contains("two embeddings are named 'bad-hands'"), "\(result.error)")
    #expect(result.error.contains("the embedding 'bad-hands' appears in no prompt"))
    let unguided = try runSD(
      quick(
        folder.appendingPathComponent("scale1.png"),
        ["--negative-prompt", "blurry", "--guidance-scale", "1"]))
    #expect(unguided.status == 0, "\(unguided.error)")
    #expect(unguided.error.contains("the negative prompt has no effect at guidance scale 1.0"))
    let nag = try runSD(
      quick(
        folder.appendingPathComponent("nag.png"),
        ["--negative-prompt", "blurry", "--guidance-scale", "1", "--guidance", "nag"]))
    #expect(!nag.error.contains("no effect"), "\(nag.error)")
  }

  /// `--from-png` repeats a run from its PNG's parameters (ours: the same pixels), reads a web
  /// UI's parameters (their sampler names, unknown keys skipped), and lets options given on the
  /// command line win.
  @Test func fromPNGRepeatsARun() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let first = folder.appendingPathComponent("first.png")
    let settings = [
      "--negative-prompt", "green tones", "--negative-prompt", "blurry, lowres:0.5", "--seed", "7",
      "--sampler", "dpm++2m", "--schedule", "ays", "--guidance-scale", "5.5", "--clip-skip",
      "1", "--negative-steps", "1-2", "--cfg-cutoff", "0.5",
    ]
    var original = quick(first, settings)
    original[3] = "a red apple, (shiny:1.2)"
    #expect(try runSD(original).status == 0)
    let again = folder.appendingPathComponent("again.png")
    let repeated = try runSD(
      ["--model", tinyModel, "--from-png", first.path, "--output", again.path, "--quiet"])
    #expect(repeated.status == 0, "\(repeated.error)")
    #expect(try RGBImage(contentsOf: again) == RGBImage(contentsOf: first))
    #expect(
      try PNGText.read(contentsOf: again)["parameters"]
        == PNGText.read(contentsOf: first)["parameters"])

    let reseeded = folder.appendingPathComponent("reseeded.png")
    #expect(
      try runSD([
        "--model", tinyModel, "--from-png", first.path, "--seed", "8", "--output", reseeded.path,
        "--quiet",
      ]).status == 0)
    #expect(try RGBImage(contentsOf: reseeded) != RGBImage(contentsOf: first))

    let webUI = folder.appendingPathComponent("webui.png")
    let text =
      "a cat\nNegative prompt: dog\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 3, Size: 64x64, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    try Data(
      RGBImage(width: 64, height: 64, red: 0, green: 0, blue: 0).pngData(text: [
        ("parameters", text)
      ])
    ).write(to: webUI)
    let fromWebUI = folder.appendingPathComponent("from-webui.png")
    let direct = folder.appendingPathComponent("direct.png")
    #expect(
      try runSD(["--model", tinyModel, "--from-png", webUI.path, "--output", fromWebUI.path])
        .status == 0)
    #expect(
      try runSD([
        "--model", tinyModel, "--prompt", "a cat", "--negative-prompt", "dog", "--steps", "2",
        "--sampler", "euler-a", "--guidance-scale", "7", "--seed", "3", "--width", "64",
        "--height", "64", "--output", direct.path,
      ]).status == 0)
    #expect(try RGBImage(contentsOf: fromWebUI) == RGBImage(contentsOf: direct))
    let none = try runSD(["--model", tinyModel, "--from-png", direct.path + "x"])
    #expect(none.status == 2 && none.error.contains("--from-png"), "\(none.error)")
  }

  @Test func truncateWarnsWhatWasCut() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let long = Array(repeating: "apple", count: 80).joined(separator: " ")
    var arguments = quick(folder.appendingPathComponent("out.png"), ["--truncate"])
    arguments[3] = long
    let result = try runSD(arguments)
    #expect(result.status == 0, "\(result.error)")
    #expect(
      result.error.contains(
        "the prompt is longer than 75 tokens; dropped: apple</w> apple</w> apple</w> apple</w> apple</w>"
      ))
  }

  /// img2img without --width/--height takes the init image's size.
  @Test func img2imgUsesTheInitImageSize() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let start = folder.appendingPathComponent("start.png")
    try RGBImage(width: 72, height: 48, red: 200, green: 30, blue: 30).writePNG(to: start)
    let output = folder.appendingPathComponent("out.png")
    let result = try runSD([
      "--model", tinyModel, "--prompt", "a red apple", "--init-image", start.path, "--strength",
      "0.5",
      "--steps", "2", "--quiet", "--output", output.path,
    ])
    #expect(result.status == 0, "\(result.error)")
    let image = try RGBImage(contentsOf: output)
    #expect(image.width == 72 && image.height == 48)
  }

  /// The CLI writes exactly the image the library makes for the same settings in this process,
  /// whatever OpenBLAS's own thread count in either process (OpenBLAS rounds differently with its
  /// threads, so the library never leaves a product to them; see MatMul.swift).
  @Test(arguments: [nil, "1", "2"])
  func cliImageMatchesLibrary(openBLASThreads: String?) throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let environment = openBLASThreads.map { ["OPENBLAS_NUM_THREADS": $0] } ?? [:]
    let result = try runSD(
      quick(output, ["--seed", "7", "--negative-prompt", "blurry"]), environment: environment)
    #expect(result.status == 0, "\(result.error)")
    let pipeline = try StableDiffusionPipeline(modelAt: URL(fileURLWithPath: tinyModel))
    let request = GenerationRequest(
      prompt: "a red apple", negativePrompt: "blurry", steps: 2, seed: 7, width: 64, height: 64)
    let expected = try pipeline.generate(request, options: ComputeOptions(threadCount: 1)).image
    #expect(try RGBImage(contentsOf: output) == expected)
  }

  /// A binary built for AVX2 or AVX-512 stops with one line and exit status 1 on a CPU without
  /// them, instead of dying of SIGILL in the first kernel: run under qemu's emulation of a CPU
  /// with SSE4 only (Westmere; .ci/run installs qemu-user).
  @Test(
    .enabled(
      if: Runtime.usesPortableGEMM && FileManager.default.fileExists(atPath: "/usr/bin/qemu-x86_64")
    ))
  func otherCPUGetsOneLineNotSIGILL() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let result = try runSD(
      ["-cpu", "Westmere", sdExecutable.path] + quick(output),
      shell: "exec /usr/bin/qemu-x86_64 \"$@\"")
    #expect(result.status == 1, "\(result.error)")
    #expect(result.error.contains("this binary was built for"), "\(result.error)")
    #expect(result.error.contains("SD_TARGET_CPU=x86-64"))
    #expect(!FileManager.default.fileExists(atPath: output.path))
  }

  /// `sd` splits the work over its own threads by problem size; 1 and 2 threads give the same
  /// bytes.
  @Test func threadCountGivesIdenticalFiles() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let one = folder.appendingPathComponent("one.png")
    let two = folder.appendingPathComponent("two.png")
    #expect(try runSD(quick(one, ["--threads", "1", "--sampler", "euler-a"])).status == 0)
    #expect(try runSD(quick(two, ["--threads", "2", "--sampler", "euler-a"])).status == 0)
    #expect(try Data(contentsOf: one) == Data(contentsOf: two))
  }

  /// Ctrl-C stops after the current step, exits 130 and leaves no output file.
  @Test func interruptLeavesNoOutput() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let process = try startLongRun(writing: output)
    process.interrupt()
    process.waitUntilExit()
    #expect(process.terminationStatus == 130)
    #expect(!FileManager.default.fileExists(atPath: output.path))
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
  }

  @Test func verifyPassesOnFixtureDumps() throws {
    for model in ["sd15", "sd2", "sdxl"] {
      let result = try runSD([
        "verify", "--model", fixturePath("tiny-\(model)"), "--activations",
        fixturePath("verify-\(model).safetensors"),
      ])
      #expect(result.status == 0, "\(model): \(result.output)")
      #expect(result.output.contains("rows pass"))
    }
  }

  /// A corrupted weight in the UNet's mid block: the text encoder and the blocks before it
  /// still pass; the mid block and everything computed from it fail.
  @Test func verifyNamesTheFirstDivergentBlock() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let source = URL(fileURLWithPath: tinyModel)
    let copy = folder.appendingPathComponent("tiny-sd15")
    try FileManager.default.copyItem(at: source, to: copy)
    let weightsURL = copy.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
    let file = try SafeTensorsFile(path: weightsURL.path)
    var tensors: [String: Tensor] = [:]
    for name in file.names {
      var tensor = try file.tensor(name)
      if name == "mid_block.resnets.0.conv2.bias" { tensor = tensor + 0.5 }
      tensors[name] = tensor
    }
    try FileManager.default.removeItem(at: weightsURL)
    try SafeTensorsWriter.write(tensors, metadata: [:], to: weightsURL.path)

    let result = try runSD([
      "verify", "--model", copy.path, "--activations", fixturePath("verify-sd15.safetensors"),
      "--json",
    ])
    #expect(result.status == 1)
    var outcome: [String: Bool] = [:]
    for line in result.output.split(separator: "\n") {
      let row = try JSONValue.parse(Array(line.utf8))
      outcome[row["tensor"]?.stringValue ?? ""] = row["pass"]?.boolValue
    }
    for passing in [
      "text_encoder.prompt.last_hidden_state", "unet.step0.time_embedding", "unet.step0.conv_in",
      "unet.step0.down_blocks.0", "unet.step0.down_blocks.1",
    ] {
      #expect(outcome[passing] == true, "\(passing) should pass")
    }
    for failing in [
      "unet.step0.mid_block", "unet.step0.up_blocks.0", "unet.step0.up_blocks.1", "unet.step0.out",
      "guidance.noise_pred.0", "latents.0",
    ] {
      #expect(outcome[failing] == false, "\(failing) should fail")
    }
  }
}

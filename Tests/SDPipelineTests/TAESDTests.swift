// TAESD in the pipeline and the CLI: a whole tiny-sd15 run decoded by the tiny AutoencoderTiny
// against diffusers with `pipe.vae = AutoencoderTiny` (weights/make_taesd_fixtures.py), previews
// in the progress callback exactly every N steps, `--taesd`, `--preview`, `--preview-every`.

import Foundation
import SDModels
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

private let taesdFolder = fixturesDirectory.appendingPathComponent("tiny-taesd")
private let withTAESD = Result { try tinyPipeline.get().withTinyAutoencoder(at: taesdFolder) }
private let options = ComputeOptions(threadCount: 2)

/// The recorded run: Euler, 4 steps, the apple prompt against "green tones" at 7.5, seed 42.
private func appleRequest(_ decoder: LatentDecoder = .tinyAutoencoder) -> GenerationRequest {
  GenerationRequest(
    prompt: "a red apple on a wooden table", negativePrompt: "green tones", steps: 4,
    guidance: Guidance(scale: 7.5), seed: 42, sampler: .euler, width: 64, height: 64,
    decoder: decoder)
}

/// Runs `request` and returns the result and the step of every progress report with its
/// preview.
private func run(_ pipeline: StableDiffusionPipeline, _ request: GenerationRequest) throws -> (
  GenerationResult, [(step: Int, preview: RGBImage?)]
) {
  var reports: [(step: Int, preview: RGBImage?)] = []
  let result = try pipeline.generate(request, options: options) {
    reports.append(($0.step, $0.preview))
    return true
  }
  return (result, reports)
}

@Suite("TAESD in the pipeline: diffusers' pipe.vae = AutoencoderTiny, and previews")
struct TAESDPipelineTests {
  @Test("a tiny-sd15 run decoded by TAESD matches diffusers (latents, decoder output, image)")
  func matchesDiffusers() throws {
    let reference = try fixture("taesd-sd15.safetensors")
    let pipeline = try withTAESD.get()
    let (steps, worst) = try expectMatchesReference(
      pipeline, appleRequest(), reference: reference, name: "pipeline")
    #expect(steps == 4)
    // diffusers' postprocess: (x / 2 + 0.5) clamped to [0, 1].
    let result = try pipeline.generate(appleRequest(), options: options)
    let output = result.decoded.map { min(1, max(0, $0 / 2 + 0.5)) }
    let image = expectClose(output, try reference.tensor("pipeline.output"), "pipeline.output")
    let decoded = compare(result.decoded, try reference.tensor("pipeline.image"))
    print(
      "TAESD pipeline max |Δ|/max(1,|ref|): latents and decoder output \(worst), decoder output \(decoded.maxAbsolute / decoded.scale), image \(image)"
    )
  }

  @Test("previews come exactly every N steps, none without previews", arguments: [1, 2, 3, 5])
  func previewsEveryNSteps(every: Int) throws {
    var request = appleRequest()
    request.previews = PreviewSettings(every: every)
    let (_, reports) = try run(try withTAESD.get(), request)
    #expect(reports.map(\.step) == [1, 2, 3, 4])
    for report in reports {
      #expect((report.preview != nil) == (report.step % every == 0), "step \(report.step)")
      #expect(report.preview.map { $0.width == 64 && $0.height == 64 } ?? true)
    }
    let (_, none) = try run(try withTAESD.get(), appleRequest())
    #expect(none.allSatisfy { $0.preview == nil })
  }

  @Test("the last step's preview is the final image, whichever decoder makes both")
  func lastPreviewIsTheImage() throws {
    let pipeline = try withTAESD.get()
    for decoder in LatentDecoder.allCases {
      var request = appleRequest(decoder)
      request.previews = PreviewSettings(every: 1, decoder: decoder)
      let (result, reports) = try run(pipeline, request)
      #expect(reports.last?.preview == result.image, "\(decoder)")
      // The same request without previews decodes the same image itself.
      #expect(try pipeline.generate(appleRequest(decoder), options: options).image == result.image)
    }
    // TAESD previews (the default once it is attached) of a run the VAE decodes.
    var request = appleRequest(.vae)
    request.previews = PreviewSettings(every: 4)
    let (result, reports) = try run(pipeline, request)
    let taesdImage = try pipeline.generate(appleRequest(), options: options).image
    #expect(reports.last?.preview == taesdImage)
    #expect(result.image != taesdImage)
  }

  @Test("without a tiny autoencoder previews use the VAE; asking for TAESD is refused by name")
  func withoutTinyAutoencoder() throws {
    let pipeline = try tinyPipeline.get()
    var request = appleRequest(.vae)
    request.previews = PreviewSettings(every: 2)
    let (result, reports) = try run(pipeline, request)
    #expect(reports.compactMap(\.preview).count == 2)
    #expect(reports.last?.preview == result.image)
    for (field, change) in [
      ("decoder", { (r: inout GenerationRequest) in r.decoder = .tinyAutoencoder }),
      ("previews.decoder", { $0.previews = PreviewSettings(every: 1, decoder: .tinyAutoencoder) }),
      ("previews.every", { $0.previews = PreviewSettings(every: 0) }),
    ] {
      var bad = appleRequest(.vae)
      change(&bad)
      let error = #expect(throws: PipelineError.self) {
        try pipeline.generate(bad, options: options)
      }
      guard case .invalidArgument(let name, _) = error else {
        Issue.record("\(field): \(String(describing: error))")
        continue
      }
      #expect(name == field)
    }
  }

  @Test("a TAESD whose latents do not fit the model is refused")
  func mismatchedTinyAutoencoder() throws {
    var configuration = AutoencoderTinyConfiguration.taesd
    configuration.decoderBlockOutChannels = [8, 8, 8]
    configuration.decoderBlockCounts = [1, 1, 1]
    configuration.encoderBlockOutChannels = [8, 8, 8]
    configuration.encoderBlockCounts = [1, 1, 1]
    let model = try AutoencoderTiny(
      configuration: configuration, weights: WeightStore(syntheticSeed: 1))
    let error = #expect(throws: PipelineError.self) {
      try tinyPipeline.get().withTinyAutoencoder(model)
    }
    #expect("\(String(describing: error))".contains("4 pixels per latent"))
  }
}

@Suite("sd --taesd, --preview, --preview-every")
struct TAESDCommandLineTests {
  @Test("--preview writes a PNG; --taesd changes the image; the last preview is the image")
  func previewAndTAESD() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let (full, tiny) = (
      folder.appendingPathComponent("full.png"), folder.appendingPathComponent("tiny.png")
    )
    let preview = folder.appendingPathComponent("preview.png")
    let first = try runSD(quick(full, ["--sampler", "euler", "--preview", preview.path]))
    #expect(first.status == 0, "\(first.error)")
    let vaePreview = try RGBImage(contentsOf: preview)
    #expect(vaePreview.width == 64 && vaePreview.height == 64)
    #expect(vaePreview == (try RGBImage(contentsOf: full)), "the VAE's last preview is the image")

    let second = try runSD(
      quick(
        tiny,
        [
          "--sampler", "euler", "--taesd", taesdFolder.path, "--preview", preview.path,
          "--preview-every", "2", "--overwrite",
        ]))
    #expect(second.status == 0, "\(second.error)")
    let image = try RGBImage(contentsOf: tiny)
    #expect(image != (try RGBImage(contentsOf: full)), "--taesd gave the VAE's image")
    #expect(try RGBImage(contentsOf: preview) == image)
    #expect(
      try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == [
        "full.png", "preview.png", "tiny.png",
      ], "a temporary file was left")
  }

  @Test("bad --taesd / --preview input: one line naming the option, exit 2")
  func badInput() throws {
    let folder = try temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("out.png")
    let existing = folder.appendingPathComponent("existing.png")
    try Data([1]).write(to: existing)
    let vaeFolder = fixturesDirectory.appendingPathComponent("tiny-sd15/vae").path
    let configOnly = folder.appendingPathComponent("config-only")
    try FileManager.default.createDirectory(at: configOnly, withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      at: taesdFolder.appendingPathComponent("config.json"),
      to: configOnly.appendingPathComponent("config.json"))
    let cases: [([String], String)] = [
      (["--preview-every", "2"], "--preview-every needs --preview"),
      (["--preview", output.path, "--preview-every", "0"], "--preview-every must be an integer"),
      (["--preview", "-"], "--preview: standard output is not supported"),
      (["--preview", output.path], "--preview: '\(output.path)' is also the --output"),
      (["--preview", existing.path], "--preview: '\(existing.path)' exists"),
      (["--taesd", "/no/such/taesd"], "--taesd: no such file or folder"),
      (["--taesd", folder.path], "--taesd: \(folder.path): no config.json"),
      (["--taesd", vaeFolder], "must be AutoencoderTiny (found AutoencoderKL"),
      (["--taesd", configOnly.path], "no diffusion_pytorch_model.safetensors"),
    ]
    for (extra, message) in cases {
      let result = try runSD(quick(output, extra))
      #expect(result.status == 2, "\(extra): status \(result.status), stderr \(result.error)")
      #expect(result.error.contains(message), "\(extra): \(result.error)")
      #expect(result.error.split(separator: "\n").count == 1, "\(extra): \(result.error)")
    }
    #expect(!FileManager.default.fileExists(atPath: output.path))
  }
}

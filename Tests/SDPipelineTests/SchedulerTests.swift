// Scheduler settings and schedules that the end-to-end fixtures do not reach: config errors,
// img2img's first step, and the timesteps of each spacing against diffusers' set_timesteps.

import Foundation
import SDPipeline
import SDTensor
import SDTestSupport
import Testing

@Suite struct SchedulerTests {
  private func configuration(_ json: String) throws -> SchedulerConfiguration {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
      "scheduler-\(UUID().uuidString).json")
    try Data(json.utf8).write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    return try SchedulerConfiguration(contentsOf: url)
  }

  @Test func readsTheModelsSchedulerFile() throws {
    let url = fixturesDirectory.appendingPathComponent("tiny-sd2/scheduler/scheduler_config.json")
    let settings = try SchedulerConfiguration(contentsOf: url)
    #expect(settings.kind == .euler)
    #expect(settings.predictionType == .vPrediction)
  }

  @Test func unsupportedSettingsAreNamed() throws {
    for (json, key) in [
      (#"{"thresholding": true}"#, "thresholding"),
      (#"{"beta_schedule": "sigmoid"}"#, "beta_schedule"),
      (#"{"solver_order": 3}"#, "solver_order"), (#"{"prediction_type": 7}"#, "prediction_type"),
      (#"{"num_train_timesteps": "many"}"#, "num_train_timesteps"),
    ] {
      #expect {
        _ = try configuration(json)
      } throws: { error in
        guard case .invalidSchedulerConfiguration(_, let reason) = error as? PipelineError else {
          return false
        }
        return reason.contains("'\(key)'")
      }
    }
    #expect(throws: PipelineError.self) { _ = try configuration("[1, 2]") }
    #expect(throws: PipelineError.self) { _ = try configuration("{") }
  }

  /// Every scheduler class we read, saved by diffusers' `save_config` with its defaults and with
  /// SD 1.5's settings (weights/make_scheduler_configs.py): Python's JSON, `-Infinity` included.
  @Test(arguments: [
    "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", "LCMScheduler", "TCDScheduler",
  ])
  func readsConfigsAsDiffusersSavesThem(className: String) throws {
    let folder = fixturesDirectory.appendingPathComponent("scheduler-configs")
    let kind = try #require(SchedulerKind(className: className))
    for variant in ["", "-sd15"] {
      let url = folder.appendingPathComponent("\(className)\(variant).json")
      let settings = try SchedulerConfiguration(contentsOf: url)
      #expect(settings.kind == kind)
      // diffusers' PNDM default runs Runge–Kutta warm-up steps, which we refuse by name.
      if kind == .pndm && variant.isEmpty {
        #expect {
          _ = try makeScheduler(kind, configuration: settings, steps: 20)
        } throws: { error in "\(error)".contains("skip_prk_steps") }
        continue
      }
      #expect(try makeScheduler(kind, configuration: settings, steps: 20).timesteps.count >= 20)
    }
  }

  /// A model whose scheduler is a class this runtime lacks is not run as another: without a
  /// sampler the request is refused naming the class and the ones there are; with one it runs.
  @Test func unknownSchedulerClassIsNamed() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "unknown-scheduler-\(UUID().uuidString)")
    try FileManager.default.createDirectory(
      at: folder.appendingPathComponent("scheduler"), withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let model = fixturesDirectory.appendingPathComponent("tiny-sd15")
    for part in ["text_encoder", "tokenizer", "unet", "vae"] {
      try FileManager.default.createSymbolicLink(
        at: folder.appendingPathComponent(part),
        withDestinationURL: model.appendingPathComponent(part))
    }
    try Data(#"{"_class_name": "UniPCMultistepScheduler", "beta_schedule": "scaled_linear"}"#.utf8)
      .write(to: folder.appendingPathComponent("scheduler/scheduler_config.json"))
    let pipeline = try StableDiffusionPipeline(modelAt: folder)
    #expect(pipeline.defaultSampler == nil)
    var request = GenerationRequest(prompt: "x", steps: 2, width: 64, height: 64)
    #expect {
      _ = try pipeline.generate(request, options: ComputeOptions(threadCount: 1))
    } throws: { error in
      "\(error)".contains("UniPCMultistepScheduler") && "\(error)".contains("LCMScheduler")
    }
    request.sampler = .euler
    #expect(
      try pipeline.generate(request, options: ComputeOptions(threadCount: 1)).image.width == 64)
  }

  @Test func finiteLambdaClippingIsRefused() throws {
    #expect {
      _ = try configuration(#"{"lambda_min_clipped": -5.1}"#)
    } throws: { error in "\(error)".contains("lambda_min_clipped") }
    #expect(try configuration(#"{"lambda_min_clipped": -Infinity, "x": NaN}"#).kind == nil)
  }

  /// diffusers: DDIMScheduler / EulerDiscreteScheduler / DPMSolverMultistepScheduler
  /// .from_config(SD 1.5 config).set_timesteps(10).timesteps.
  @Test func timestepsOfEachSampler() throws {
    let sd15 = SchedulerConfiguration.stableDiffusion15
    #expect(
      try makeScheduler(.ddim, configuration: sd15, steps: 10).timesteps == [
        901, 801, 701, 601, 501, 401, 301, 201, 101, 1,
      ])
    #expect(
      try makeScheduler(.pndm, configuration: sd15, steps: 4).timesteps == [751, 501, 501, 251, 1])
    #expect(
      try makeScheduler(.dpmSolverMultistep, configuration: sd15, steps: 4).timesteps == [
        801, 601, 401, 201,
      ])
    var linspace = sd15
    linspace.timestepSpacing = .linspace
    #expect(
      try makeScheduler(.euler, configuration: linspace, steps: 4).timesteps == [999, 666, 333, 0])
    var trailing = sd15
    trailing.timestepSpacing = .trailing
    #expect(
      try makeScheduler(.ddim, configuration: trailing, steps: 4).timesteps == [999, 749, 499, 249])
  }

  /// `rescale_betas_zero_snr` as each diffusers class has it: DDIM keeps ᾱ_T = 0 (the σ
  /// samplers' 2⁻²⁴ would give x̂₀ = 2⁻¹² here, not 0). diffusers: DDIMScheduler(zero SNR,
  /// v_prediction, trailing).step(zeros, 999, ones) = 0.9832744.
  @Test func zeroTerminalSNRFollowsEachClass() throws {
    var settings = SchedulerConfiguration.stableDiffusion15
    (settings.rescaleBetasZeroSNR, settings.predictionType) = (true, .vPrediction)
    settings.timestepSpacing = .trailing
    var ddim = try makeScheduler(.ddim, configuration: settings, steps: 4)
    var generator = TorchGenerator(seed: 0)
    let next = ddim.step(
      noisePrediction: Tensor(zeros: [1, 1, 1, 2]), stepIndex: 0,
      sample: Tensor(shape: [1, 1, 1, 2], scalars: [1, 1]), generator: &generator)
    #expect(next.scalars.allSatisfy { abs($0 - 0.983_274_4) < 1e-6 }, "\(next.scalars)")
    // PNDM's class has no such key: its timesteps and ᾱ stay those of the plain schedule.
    var plain = settings
    plain.rescaleBetasZeroSNR = false
    var pndm = try makeScheduler(.pndm, configuration: settings, steps: 4)
    var plainPNDM = try makeScheduler(.pndm, configuration: plain, steps: 4)
    let sample = Tensor(shape: [1, 1, 1, 2], scalars: [0.5, -1])
    #expect(
      pndm.step(noisePrediction: sample, stepIndex: 0, sample: sample, generator: &generator)
        == plainPNDM.step(
          noisePrediction: sample, stepIndex: 0, sample: sample, generator: &generator))
  }

  /// diffusers' get_timesteps: int(steps · strength) steps run, computed from the decimal.
  @Test func img2imgFirstStep() throws {
    let scheduler = try makeScheduler(.ddim, configuration: .stableDiffusion15, steps: 10)
    #expect(scheduler.firstStep(strength: 0.7) == 3)
    #expect(scheduler.firstStep(strength: 1) == 0)
    #expect(scheduler.firstStep(strength: 0.05) == 10)
    #expect(throws: PipelineError.self) {
      _ = try makeScheduler(.ddim, configuration: .stableDiffusion15, steps: 0)
    }
    // Leading spacing with offset 1 would index ᾱ[1000]; Karras rounding would repeat steps.
    for kind in SchedulerKind.allCases {
      #expect(throws: PipelineError.self) {
        _ = try makeScheduler(kind, configuration: .stableDiffusion15, steps: 1000)
      }
    }
  }

  @Test func samplerNames() {
    for kind in SchedulerKind.allCases { #expect(SchedulerKind(name: kind.rawValue) == kind) }
    #expect(SchedulerKind(name: "Euler-A") == .eulerAncestral)
    #expect(SchedulerKind(className: "PNDMScheduler") == .pndm)
    #expect(SchedulerKind(className: "UniPCMultistepScheduler") == nil)
  }
}

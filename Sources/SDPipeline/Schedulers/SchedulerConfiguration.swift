// The settings of `scheduler/scheduler_config.json` and the training noise schedule they define
// (betas → ᾱ), read as diffusers' `from_config` reads them.

import Foundation
import SDModels
import SDTensor

/// What the network predicts (`prediction_type`).
public enum PredictionType: String, Sendable {
  /// The noise ε (SD 1.x, SD 2 base).
  case epsilon
  /// v = ᾱ^½·ε − (1 − ᾱ)^½·x₀ (SD 2 768-v).
  case vPrediction = "v_prediction"
  /// x₀ itself.
  case sample
}

/// How inference timesteps are spread over the training range (`timestep_spacing`,
/// Lin et al. 2023, table 2).
public enum TimestepSpacing: String, Sendable {
  /// `linspace`: evenly from T − 1 down to 0, both included; `leading`: multiples of T/steps
  /// from 0 plus `steps_offset` (the top of the range is not reached); `trailing`: every
  /// (T/steps)-th training step down from T − 1 (what few-step models want).
  case linspace, leading, trailing
}

/// The settings of `scheduler/scheduler_config.json`. Keys the file lacks stay nil, and each
/// sampler fills them with its own diffusers class default (DDIM clips samples by default,
/// Euler spaces timesteps by `linspace`, ...), exactly as `Scheduler.from_config` does.
public struct SchedulerConfiguration: Sendable, Equatable {
  /// The sampler the file names (`_class_name`), nil when absent or not implemented here.
  public var kind: SchedulerKind?
  /// `_class_name` as the file spells it (nil when absent).
  public var className: String?
  /// `num_train_timesteps`: T, the length of the training noise schedule (1000).
  public var trainTimesteps: Int
  /// `beta_start`: β at the first training step (0.00085 in SD; class default 0.0001).
  public var betaStart: Double
  /// `beta_end`: β at the last training step (0.012 in SD; class default 0.02).
  public var betaEnd: Double
  /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
  public var betaSchedule: String
  /// `trained_betas`: T explicit βs that replace the schedule; nil when absent.
  public var trainedBetas: [Double]?
  /// `prediction_type`: what the UNet predicts (default `epsilon`).
  public var predictionType: PredictionType
  /// `timestep_spacing`; nil: each sampler's class default (`leading` for DDIM and PNDM,
  /// `linspace` for Euler, LMS and DPM-Solver).
  public var timestepSpacing: TimestepSpacing?
  /// `steps_offset`: added to the `leading` timesteps (1 in SD; default 0).
  public var stepsOffset: Int
  /// `set_alpha_to_one`: ᾱ after the last step is 1 rather than ᾱ₀ (DDIM, PNDM); nil: the
  /// class default (DDIM on, PNDM off).
  public var setAlphaToOne: Bool?
  /// `clip_sample`: clamp x̂₀ to ±`clipSampleRange` (DDIM, LCM); nil: the class default (DDIM
  /// on, LCM off).
  public var clipSample: Bool?
  /// `clip_sample_range`: the bound of `clip_sample` (default 1).
  public var clipSampleRange: Double
  /// `skip_prk_steps`: PNDM without its Runge–Kutta warm-up; PNDM runs only when it is true.
  public var skipPRKSteps: Bool?
  /// `use_karras_sigmas`: Euler, LMS and DPM-Solver step on Karras et al.'s σs (ρ = 7).
  public var useKarrasSigmas: Bool
  /// Not a diffusers key: Euler, Euler ancestral, LMS and DPM-Solver step on the Align Your
  /// Steps σs (Sabour et al. 2024) instead of the spaced or Karras ones. Set by
  /// `ScheduleType.alignYourSteps`.
  public var useAlignYourStepsSigmas = false
  /// `rescale_betas_zero_snr`: rescale the betas so that the last step has zero SNR (Lin et al.
  /// 2023), for models trained that way.
  public var rescaleBetasZeroSNR: Bool
  /// `zero` or `sigma_min`.
  public var finalSigmasType: String
  /// `sigma_min`: the smallest Karras σ; nil: the schedule's own.
  public var sigmaMin: Double?
  /// `sigma_max`: the largest Karras σ; nil: the schedule's own.
  public var sigmaMax: Double?
  /// DPM-Solver: `dpmsolver++` or `sde-dpmsolver++`.
  public var algorithmType: String
  /// DPM-Solver: `solver_order`, 1 or 2 (default 2).
  public var solverOrder: Int
  /// DPM-Solver: `midpoint` or `heun`.
  public var solverType: String
  /// DPM-Solver: `lower_order_final`, a first-order last step when there are fewer than 15
  /// steps (default true).
  public var lowerOrderFinal: Bool
  /// DPM-Solver: `euler_at_final`, a first-order last step always (default false).
  public var eulerAtFinal: Bool
  /// LCM / TCD: the distillation schedule's step count (`original_inference_steps`, default 50).
  public var originalInferenceSteps: Int?
  /// LCM: t's factor in the boundary conditions (`timestep_scaling`, default 10).
  public var timestepScaling: Double?
  /// The file the settings came from, for error messages.
  public var file: String

  /// SD 1.5's scheduler: PNDM, scaled-linear betas 0.00085…0.012, leading spacing, offset 1.
  public static let stableDiffusion15 = SchedulerConfiguration(
    kind: .pndm, trainTimesteps: 1000, betaStart: 0.00085, betaEnd: 0.012,
    betaSchedule: "scaled_linear",
    trainedBetas: nil, predictionType: .epsilon, timestepSpacing: .leading, stepsOffset: 1,
    setAlphaToOne: false,
    clipSample: false, clipSampleRange: 1, skipPRKSteps: true, useKarrasSigmas: false,
    rescaleBetasZeroSNR: false,
    finalSigmasType: "zero", sigmaMin: nil, sigmaMax: nil, algorithmType: "dpmsolver++",
    solverOrder: 2,
    solverType: "midpoint", lowerOrderFinal: true, eulerAtFinal: false,
    file: "<built-in SD 1.5 scheduler>")

  /// Reads `scheduler_config.json`.
  /// - Throws: `PipelineError.invalidSchedulerConfiguration` naming the file and key.
  public init(contentsOf url: URL) throws(PipelineError) {
    do { try self.init(ConfigReader(contentsOf: url)) } catch {
      guard case .invalidConfiguration(let file, let reason) = error else { throw .model(error) }
      throw .invalidSchedulerConfiguration(file: file, reason: reason)
    }
  }

  private init(_ reader: ConfigReader) throws(ModelError) {
    className = reader.value("_class_name")?.stringValue
    kind = className.flatMap(SchedulerKind.init(className:))
    trainTimesteps = try reader.int("num_train_timesteps", in: 2...100_000) ?? 1000
    betaStart = try reader.double("beta_start") ?? 0.0001
    betaEnd = try reader.double("beta_end") ?? 0.02
    // β is a per-step noise variance: 0 < β_start ≤ β_end < 1, or ᾱ is 0, 1 or negative.
    guard betaStart > 0, betaStart < 1 else {
      throw reader.fail("beta_start", "in (0, 1), got \(betaStart)")
    }
    guard betaEnd >= betaStart, betaEnd < 1 else {
      throw reader.fail("beta_end", "in [beta_start, 1), got \(betaEnd)")
    }
    betaSchedule =
      try reader.string("beta_schedule", oneOf: ["linear", "scaled_linear", "squaredcos_cap_v2"])
      ?? "linear"
    if let raw = reader.value("trained_betas") {
      guard let list = raw.arrayValue?.compactMap(\.doubleValue), list.count == trainTimesteps,
        list.allSatisfy({ $0 > 0 && $0 < 1 })
      else { throw reader.fail("trained_betas", "null or \(trainTimesteps) numbers in (0, 1)") }
      trainedBetas = list
    } else {
      trainedBetas = nil
    }
    predictionType =
      PredictionType(
        rawValue: try reader.string(
          "prediction_type", oneOf: ["epsilon", "v_prediction", "sample"]) ?? "epsilon")
      ?? .epsilon
    timestepSpacing = try reader.string(
      "timestep_spacing", oneOf: ["linspace", "leading", "trailing"]
    ).flatMap(TimestepSpacing.init(rawValue:))
    stepsOffset = try reader.int("steps_offset", in: 0...trainTimesteps) ?? 0
    setAlphaToOne = try reader.bool("set_alpha_to_one")
    clipSample = try reader.bool("clip_sample")
    clipSampleRange = try reader.double("clip_sample_range") ?? 1
    guard clipSampleRange > 0 else { throw reader.fail("clip_sample_range", "a number > 0") }
    skipPRKSteps = try reader.bool("skip_prk_steps")
    useKarrasSigmas = try reader.bool("use_karras_sigmas") ?? false
    rescaleBetasZeroSNR = try reader.bool("rescale_betas_zero_snr") ?? false
    finalSigmasType =
      try reader.string("final_sigmas_type", oneOf: ["zero", "sigma_min"]) ?? "zero"
    sigmaMin = try reader.double("sigma_min")
    sigmaMax = try reader.double("sigma_max")
    algorithmType =
      try reader.string("algorithm_type", oneOf: ["dpmsolver++", "sde-dpmsolver++"])
      ?? "dpmsolver++"
    solverOrder = try reader.int("solver_order", in: 1...2) ?? 2
    solverType = try reader.string("solver_type", oneOf: ["midpoint", "heun"]) ?? "midpoint"
    lowerOrderFinal = try reader.bool("lower_order_final") ?? true
    eulerAtFinal = try reader.bool("euler_at_final") ?? false
    originalInferenceSteps = try reader.int("original_inference_steps", in: 1...trainTimesteps)
    timestepScaling = try reader.double("timestep_scaling")
    if let timestepScaling, timestepScaling <= 0 {
      throw reader.fail("timestep_scaling", "a number > 0, got \(timestepScaling)")
    }
    file = reader.file
    // Options that change the maths and that this runtime does not implement are refused
    // rather than ignored.
    for key in [
      "thresholding", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
      "use_flow_sigmas", "use_dynamic_shifting",
    ]
    where try reader.bool(key) == true {
      throw reader.fail(key, "false (not implemented)")
    }
    // DPMSolverMultistep's default is -Infinity (no clipping), written as Python writes it.
    if let clipped = reader.value("lambda_min_clipped"), clipped.doubleValue != -.infinity {
      throw reader.fail("lambda_min_clipped", "-Infinity (clipping λ is not implemented)")
    }
    _ = try reader.string("interpolation_type", oneOf: ["linear"])
    _ = try reader.string("timestep_type", oneOf: ["discrete"])
    _ = try reader.string("variance_type", oneOf: ["fixed_small", "fixed_small_log"])
  }

  init(
    kind: SchedulerKind?, trainTimesteps: Int, betaStart: Double, betaEnd: Double,
    betaSchedule: String,
    trainedBetas: [Double]?, predictionType: PredictionType, timestepSpacing: TimestepSpacing?,
    stepsOffset: Int,
    setAlphaToOne: Bool?, clipSample: Bool?, clipSampleRange: Double, skipPRKSteps: Bool?,
    useKarrasSigmas: Bool,
    rescaleBetasZeroSNR: Bool, finalSigmasType: String, sigmaMin: Double?, sigmaMax: Double?,
    algorithmType: String,
    solverOrder: Int, solverType: String, lowerOrderFinal: Bool, eulerAtFinal: Bool,
    originalInferenceSteps: Int? = nil, timestepScaling: Double? = nil, file: String
  ) {
    self.originalInferenceSteps = originalInferenceSteps
    self.timestepScaling = timestepScaling
    self.kind = kind
    className = nil
    self.trainTimesteps = trainTimesteps
    self.betaStart = betaStart
    self.betaEnd = betaEnd
    self.betaSchedule = betaSchedule
    self.trainedBetas = trainedBetas
    self.predictionType = predictionType
    self.timestepSpacing = timestepSpacing
    self.stepsOffset = stepsOffset
    self.setAlphaToOne = setAlphaToOne
    self.clipSample = clipSample
    self.clipSampleRange = clipSampleRange
    self.skipPRKSteps = skipPRKSteps
    self.useKarrasSigmas = useKarrasSigmas
    self.rescaleBetasZeroSNR = rescaleBetasZeroSNR
    self.finalSigmasType = finalSigmasType
    self.sigmaMin = sigmaMin
    self.sigmaMax = sigmaMax
    self.algorithmType = algorithmType
    self.solverOrder = solverOrder
    self.solverType = solverType
    self.lowerOrderFinal = lowerOrderFinal
    self.eulerAtFinal = eulerAtFinal
    self.file = file
  }

  /// How a sampler's diffusers class treats `rescale_betas_zero_snr`.
  enum ZeroSNRHandling {
    /// DDIM, LCM, TCD: the rescaled betas, ᾱ_T = 0.
    case exact
    /// Euler, Euler ancestral, DPM-Solver: the rescaled betas with ᾱ_T = 2⁻²⁴, so σ_T stays
    /// finite.
    case finiteTerminalSigma
    /// PNDM, LMS: their classes have no such key, and `from_config` drops it.
    case ignored
  }

  /// ᾱ_t = ∏(1 − β) for t = 0 ..< trainTimesteps. Betas are float32 as in diffusers (torch
  /// linspace in float32, squared for `scaled_linear`); the product runs in double.
  func alphasCumprod(zeroSNR: ZeroSNRHandling = .exact) -> [Double] {
    let rescaleBetasZeroSNR = rescaleBetasZeroSNR && zeroSNR != .ignored
    let n = trainTimesteps
    var betas: [Double]
    if let trainedBetas {
      betas = trainedBetas.map { Double(Float($0)) }
    } else {
      switch betaSchedule {
      case "scaled_linear":
        betas = linspace(betaStart.squareRoot(), betaEnd.squareRoot(), n).map {
          Double(Float($0) * Float($0))
        }
      case "squaredcos_cap_v2":
        // Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β capped at 0.999.
        func alphaBar(_ t: Double) -> Double { pow(cos((t + 0.008) / 1.008 * Double.pi / 2), 2) }
        betas = (0..<n).map { i in
          Double(
            Float(
              min(1 - alphaBar(Double(i + 1) / Double(n)) / alphaBar(Double(i) / Double(n)), 0.999))
          )
        }
      default:
        betas = linspace(betaStart, betaEnd, n).map { Double(Float($0)) }
      }
    }
    if rescaleBetasZeroSNR { betas = Self.zeroTerminalSNR(betas) }
    var product = 1.0
    var cumulative = betas.map { beta -> Double in
      product *= 1 - beta
      return product
    }
    // diffusers keeps ᾱ_T a tiny positive number so σ_T stays finite.
    if rescaleBetasZeroSNR, zeroSNR == .finiteTerminalSigma { cumulative[n - 1] = pow(2, -24) }
    return cumulative
  }

  /// Lin et al. 2023, algorithm 1: shift and scale √ᾱ so that ᾱ_T = 0 and ᾱ_0 is unchanged.
  private static func zeroTerminalSNR(_ betas: [Double]) -> [Double] {
    var product = 1.0
    var roots = betas.map { beta -> Double in
      product *= 1 - beta
      return product.squareRoot()
    }
    let (first, last) = (roots[0], roots[roots.count - 1])
    roots = roots.map { ($0 - last) * first / (first - last) }
    let bars = roots.map { $0 * $0 }
    let ratios: [Double] = (1..<bars.count).map { (index: Int) -> Double in
      1 - bars[index] / bars[index - 1]
    }
    return [1 - bars[0]] + ratios
  }
}

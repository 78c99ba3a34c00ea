// The sampler interface and what all samplers share: the sampler names, the training noise
// schedule (betas → ᾱ), the spacing of inference timesteps and the σ tables of the
// k-diffusion-style samplers, each as diffusers 0.42 computes them (schedulers/scheduling_*.py).

import Foundation
import SDTensor

/// A denoising sampler, created fresh for each run by `makeScheduler`. Steps are addressed by
/// their index into `timesteps` (what diffusers calls `step_index`).
public protocol Scheduler: Sendable {
  /// The timesteps the UNet is called at, in order (PNDM repeats one, as in diffusers).
  var timesteps: [Float] { get }
  /// The standard deviation of the initial noise (1 for DDIM/PNDM/DPM, σ_max-based for
  /// Euler/LMS).
  var initNoiseSigma: Float { get }
  /// The number of inference steps asked for (diffusers' `num_inference_steps` argument).
  var inferenceSteps: Int { get }
  /// Scales the UNet input at a step (Euler/LMS: x / √(σ² + 1); others: unchanged).
  func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor
  /// One denoising step: the sample at `timesteps[stepIndex]` → the sample at the next one.
  /// Ancestral samplers draw their noise from `generator`.
  mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor
  /// Noises clean latents to the level of `timesteps[stepIndex]` (img2img's starting point).
  func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor
}

extension Scheduler {
  /// The first step index of an img2img run of `strength` in (0, 1], as diffusers'
  /// `get_timesteps`: the last ⌊steps · strength⌋ steps run.
  public func firstStep(strength: Float) -> Int {
    // A Float strength such as 0.7 is 0.69999998; the small margin gives the ⌊⌋ Python computes
    // from the decimal the user typed.
    let kept = min(
      Int((Double(inferenceSteps) * Double(strength) + 1e-5).rounded(.down)), inferenceSteps)
    return max(inferenceSteps - kept, 0)
  }
}

/// The samplers this runtime implements, named as on the command line.
public enum SchedulerKind: String, CaseIterable, Sendable {
  case ddim = "ddim"
  case pndm = "pndm"
  case euler = "euler"
  case eulerAncestral = "euler-a"
  case lms = "lms"
  /// DPM-Solver++(2M) (`DPMSolverMultistepScheduler`, `algorithm_type` from the config).
  case dpmSolverMultistep = "dpm++2m"
  /// DPM-Solver++(2M) on Karras σs (`use_karras_sigmas=True`).
  case dpmSolverMultistepKarras = "dpm++2m-karras"
  /// The stochastic DPM-Solver++(2M) SDE (`algorithm_type="sde-dpmsolver++"`), on Karras σs
  /// as it is usually run.
  case dpmSolverMultistepSDEKarras = "dpm++2m-sde-karras"

  /// The sampler named on the command line (`ddim`, `euler-a`, `dpm++2m-karras`, ...).
  public init?(name: String) {
    self.init(rawValue: name.lowercased())
  }

  /// The sampler of a diffusers `_class_name`, or nil for one this runtime lacks.
  public init?(className: String) {
    switch className {
    case "DDIMScheduler": self = .ddim
    case "PNDMScheduler": self = .pndm
    case "EulerDiscreteScheduler": self = .euler
    case "EulerAncestralDiscreteScheduler": self = .eulerAncestral
    case "LMSDiscreteScheduler": self = .lms
    case "DPMSolverMultistepScheduler": self = .dpmSolverMultistep
    default: return nil
    }
  }
}

/// Builds a sampler of `kind` for `steps` steps from the model's scheduler settings, with the
/// defaults diffusers' class of that sampler uses for keys the file does not have.
/// - Throws: `PipelineError.invalidSchedulerConfiguration` for settings this runtime does not
///   implement, `.invalidArgument` for a step count out of range.
public func makeScheduler(_ kind: SchedulerKind, configuration: SchedulerConfiguration, steps: Int)
  throws(PipelineError) -> any Scheduler
{
  guard steps >= 1, steps <= configuration.trainTimesteps else {
    throw .invalidArgument(
      name: "steps", reason: "must be in 1...\(configuration.trainTimesteps), got \(steps)")
  }
  let scheduler = try makeUncheckedScheduler(kind, configuration: configuration, steps: steps)
  // Near the training length, spacing and offset push a timestep past the table (diffusers
  // fails with an IndexError there) or make two steps share a timestep; refuse those counts.
  let timesteps = scheduler.timesteps
  let repeats = kind == .pndm && timesteps.count > 1 ? 1 : 0
  guard timesteps.allSatisfy({ $0 >= 0 && $0 <= Float(configuration.trainTimesteps - 1) }),
    Set(timesteps).count == timesteps.count - repeats
  else {
    throw .invalidArgument(
      name: "steps",
      reason:
        "\(steps) steps do not fit this model's \(configuration.trainTimesteps)-step schedule with \(kind.rawValue); use fewer"
    )
  }
  return scheduler
}

private func makeUncheckedScheduler(
  _ kind: SchedulerKind, configuration: SchedulerConfiguration, steps: Int
) throws(PipelineError) -> any Scheduler {
  switch kind {
  case .ddim: return try DDIMScheduler(configuration: configuration, steps: steps)
  case .pndm: return try PNDMScheduler(configuration: configuration, steps: steps)
  case .euler: return try EulerDiscreteScheduler(configuration: configuration, steps: steps)
  case .eulerAncestral:
    return try EulerAncestralDiscreteScheduler(configuration: configuration, steps: steps)
  case .lms: return try LMSDiscreteScheduler(configuration: configuration, steps: steps)
  case .dpmSolverMultistep:
    return try DPMSolverMultistepScheduler(configuration: configuration, steps: steps)
  case .dpmSolverMultistepKarras:
    var karras = configuration
    karras.useKarrasSigmas = true
    return try DPMSolverMultistepScheduler(configuration: karras, steps: steps)
  case .dpmSolverMultistepSDEKarras:
    var sde = configuration
    sde.useKarrasSigmas = true
    sde.algorithmType = "sde-dpmsolver++"
    return try DPMSolverMultistepScheduler(configuration: sde, steps: steps)
  }
}

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
  case linspace, leading, trailing
}

/// The settings of `scheduler/scheduler_config.json`. Keys the file lacks stay nil, and each
/// sampler fills them with its own diffusers class default (DDIM clips samples by default,
/// Euler spaces timesteps by `linspace`, ...), exactly as `Scheduler.from_config` does.
public struct SchedulerConfiguration: Sendable, Equatable {
  /// The sampler the file names (`_class_name`), nil when absent or not implemented here.
  public var kind: SchedulerKind?
  public var trainTimesteps: Int
  public var betaStart: Double
  public var betaEnd: Double
  /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
  public var betaSchedule: String
  public var trainedBetas: [Double]?
  public var predictionType: PredictionType
  public var timestepSpacing: TimestepSpacing?
  public var stepsOffset: Int
  public var setAlphaToOne: Bool?
  public var clipSample: Bool?
  public var clipSampleRange: Double
  public var skipPRKSteps: Bool?
  public var useKarrasSigmas: Bool
  public var rescaleBetasZeroSNR: Bool
  /// `zero` or `sigma_min`.
  public var finalSigmasType: String
  public var sigmaMin: Double?
  public var sigmaMax: Double?
  /// DPM-Solver: `dpmsolver++` or `sde-dpmsolver++`.
  public var algorithmType: String
  public var solverOrder: Int
  /// DPM-Solver: `midpoint` or `heun`.
  public var solverType: String
  public var lowerOrderFinal: Bool
  public var eulerAtFinal: Bool
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
    let file = url.path
    let json: JSONValue
    do {
      json = try JSONValue.parse(try Data(contentsOf: url), allowingNonFiniteNumbers: true)
    } catch {
      throw .invalidSchedulerConfiguration(file: file, reason: "cannot read it as JSON: \(error)")
    }
    guard json.objectValue != nil else {
      throw .invalidSchedulerConfiguration(file: file, reason: "not a JSON object")
    }
    func value(_ key: String) -> JSONValue? {
      guard let value = json[key], value != .null else { return nil }
      return value
    }
    func fail(_ key: String, _ expectation: String) -> PipelineError {
      .invalidSchedulerConfiguration(file: file, reason: "'\(key)' must be \(expectation)")
    }
    func number(_ key: String) throws(PipelineError) -> Double? {
      guard let raw = value(key) else { return nil }
      guard let number = raw.doubleValue, number.isFinite else { throw fail(key, "a number") }
      return number
    }
    func bool(_ key: String) throws(PipelineError) -> Bool? {
      guard let raw = value(key) else { return nil }
      guard let flag = raw.boolValue else { throw fail(key, "true or false") }
      return flag
    }
    func string(_ key: String, _ allowed: [String]) throws(PipelineError) -> String? {
      guard let raw = value(key) else { return nil }
      guard let text = raw.stringValue, allowed.contains(text) else {
        throw fail(key, "one of \(allowed.joined(separator: ", ")) (others are not implemented)")
      }
      return text
    }
    func integer(_ key: String, _ range: ClosedRange<Int>) throws(PipelineError) -> Int? {
      guard let raw = value(key) else { return nil }
      guard let number = raw.intValue, range.contains(number) else {
        throw fail(key, "an integer in \(range)")
      }
      return number
    }

    kind = value("_class_name")?.stringValue.flatMap(SchedulerKind.init(className:))
    trainTimesteps = try integer("num_train_timesteps", 2...100_000) ?? 1000
    betaStart = try number("beta_start") ?? 0.0001
    betaEnd = try number("beta_end") ?? 0.02
    betaSchedule =
      try string("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"]) ?? "linear"
    if let raw = value("trained_betas") {
      guard let list = raw.arrayValue?.compactMap(\.doubleValue), list.count == trainTimesteps,
        list.allSatisfy({ $0 > 0 && $0 < 1 })
      else { throw fail("trained_betas", "null or \(trainTimesteps) numbers in (0, 1)") }
      trainedBetas = list
    } else {
      trainedBetas = nil
    }
    predictionType =
      PredictionType(
        rawValue: try string("prediction_type", ["epsilon", "v_prediction", "sample"]) ?? "epsilon")
      ?? .epsilon
    timestepSpacing = try string("timestep_spacing", ["linspace", "leading", "trailing"]).flatMap(
      TimestepSpacing.init(rawValue:))
    stepsOffset = try integer("steps_offset", 0...trainTimesteps) ?? 0
    setAlphaToOne = try bool("set_alpha_to_one")
    clipSample = try bool("clip_sample")
    clipSampleRange = try number("clip_sample_range") ?? 1
    skipPRKSteps = try bool("skip_prk_steps")
    useKarrasSigmas = try bool("use_karras_sigmas") ?? false
    rescaleBetasZeroSNR = try bool("rescale_betas_zero_snr") ?? false
    finalSigmasType = try string("final_sigmas_type", ["zero", "sigma_min"]) ?? "zero"
    sigmaMin = try number("sigma_min")
    sigmaMax = try number("sigma_max")
    algorithmType =
      try string("algorithm_type", ["dpmsolver++", "sde-dpmsolver++"]) ?? "dpmsolver++"
    solverOrder = try integer("solver_order", 1...2) ?? 2
    solverType = try string("solver_type", ["midpoint", "heun"]) ?? "midpoint"
    lowerOrderFinal = try bool("lower_order_final") ?? true
    eulerAtFinal = try bool("euler_at_final") ?? false
    self.file = file
    // Options that change the maths and that this runtime does not implement are refused
    // rather than ignored.
    for key in [
      "thresholding", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
      "use_flow_sigmas", "use_dynamic_shifting",
    ]
    where try bool(key) == true {
      throw fail(key, "false (not implemented)")
    }
    // DPMSolverMultistep's default is -Infinity (no clipping), written as Python writes it.
    if let clipped = value("lambda_min_clipped"), clipped.doubleValue != -.infinity {
      throw fail("lambda_min_clipped", "-Infinity (clipping λ is not implemented)")
    }
    _ = try string("interpolation_type", ["linear"])
    _ = try string("timestep_type", ["discrete"])
    _ = try string("variance_type", ["fixed_small", "fixed_small_log"])
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
    solverOrder: Int, solverType: String, lowerOrderFinal: Bool, eulerAtFinal: Bool, file: String
  ) {
    self.kind = kind
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

  /// ᾱ_t = ∏(1 − β) for t = 0 ..< trainTimesteps. Betas are float32 as in diffusers (torch
  /// linspace in float32, squared for `scaled_linear`); the product runs in double.
  func alphasCumprod() -> [Double] {
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
    if rescaleBetasZeroSNR { cumulative[n - 1] = pow(2, -24) }
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

/// `count` evenly spaced values from `start` to `end` inclusive (numpy's linspace).
func linspace(_ start: Double, _ end: Double, _ count: Int) -> [Double] {
  guard count > 1 else { return [start] }
  let step = (end - start) / Double(count - 1)
  return (0..<count).map { $0 == count - 1 ? end : start + Double($0) * step }
}

/// The inference timesteps of the DDIM/PNDM/Euler family for a spacing, in descending order
/// (diffusers' `set_timesteps`). `linspace` values are returned unrounded; samplers that use
/// integer timesteps round them.
func spacedTimesteps(_ spacing: TimestepSpacing, steps: Int, trainTimesteps: Int, stepsOffset: Int)
  -> [Double]
{
  switch spacing {
  case .linspace:
    return linspace(0, Double(trainTimesteps - 1), steps).reversed()
  case .leading:
    let ratio = trainTimesteps / steps
    return (0..<steps).reversed().map { Double($0 * ratio + stepsOffset) }
  case .trailing:
    let ratio = Double(trainTimesteps) / Double(steps)
    return stride(from: Double(trainTimesteps), to: 0, by: -ratio).map {
      $0.rounded(.toNearestOrEven) - 1
    }
  }
}

/// The σ tables of the k-diffusion samplers (Karras et al. 2022): σ_t = √((1 − ᾱ_t)/ᾱ_t).
struct SigmaSchedule {
  /// σ at every training timestep, float32 as in diffusers.
  let trainingSigmas: [Double]

  /// log σ_t, for mapping σs back to timesteps.
  let logSigmas: [Double]

  init(alphasCumprod: [Double]) {
    trainingSigmas = alphasCumprod.map { Double(Float(((1 - $0) / $0).squareRoot())) }
    logSigmas = trainingSigmas.map { log($0) }
  }

  /// σ at fractional timesteps by linear interpolation (`np.interp`).
  func interpolated(at timesteps: [Double]) -> [Double] {
    timesteps.map { t in
      let clamped = min(max(t, 0), Double(trainingSigmas.count - 1))
      let low = Int(clamped.rounded(.down))
      let high = min(low + 1, trainingSigmas.count - 1)
      let w = clamped - Double(low)
      return trainingSigmas[low] + w * (trainingSigmas[high] - trainingSigmas[low])
    }
  }

  /// Karras et al. 2022, eq. 5 with ρ = 7: `steps` σs from σ_max down to σ_min.
  static func karras(sigmaMin: Double, sigmaMax: Double, steps: Int) -> [Double] {
    let rho = 7.0
    let (minInverse, maxInverse) = (pow(sigmaMin, 1 / rho), pow(sigmaMax, 1 / rho))
    return linspace(0, 1, steps).map { pow(maxInverse + $0 * (minInverse - maxInverse), rho) }
  }

  /// The fractional timestep of a σ: linear interpolation in log σ between the two training
  /// timesteps that bracket it (diffusers' `_sigma_to_t`).
  func timestep(of sigma: Double) -> Double {
    let logSigma = log(max(sigma, 1e-10))
    // The last index whose log σ is ≤ log σ (log σ grows with t), kept below the final one.
    var low = 0
    for (index, value) in logSigmas.enumerated() where logSigma - value >= 0 { low = index }
    low = min(low, logSigmas.count - 2)
    let w = min(max((logSigmas[low] - logSigma) / (logSigmas[low] - logSigmas[low + 1]), 0), 1)
    return (1 - w) * Double(low) + w * Double(low + 1)
  }
}

/// x₀ and ε from a model output at ᾱ (DDIM's and PNDM's parametrisations).
func originalSampleAndNoise(
  _ prediction: PredictionType, output: Tensor, sample: Tensor, alphaProduct: Double
) -> (original: Tensor, noise: Tensor) {
  let a = Float(alphaProduct.squareRoot())
  let b = Float((1 - alphaProduct).squareRoot())
  switch prediction {
  case .epsilon: return ((sample - b * output) * (1 / a), output)
  case .sample: return (output, (sample - a * output) * (1 / b))
  case .vPrediction: return (a * sample - b * output, a * output + b * sample)
  }
}

/// x₀ from a model output at σ, for the σ-parametrised samplers (Euler, LMS).
func originalSample(_ prediction: PredictionType, output: Tensor, sample: Tensor, sigma: Double)
  -> Tensor
{
  switch prediction {
  case .epsilon: return sample - Float(sigma) * output
  case .sample: return output
  case .vPrediction:
    return output * Float(-sigma / (sigma * sigma + 1).squareRoot()) + sample
      * Float(1 / (sigma * sigma + 1))
  }
}

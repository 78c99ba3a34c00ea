// The sampler interface, the sampler names and the factory that builds one for a run
// (diffusers 0.42, schedulers/scheduling_*.py). Settings: SchedulerConfiguration.swift; the
// noise schedule and σ tables all samplers share: NoiseSchedule.swift.

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
  /// DDIM (`DDIMScheduler`), deterministic (η = 0).
  case ddim = "ddim"
  /// PNDM in its PLMS form (`PNDMScheduler` with `skip_prk_steps`), SD 1.x's configured sampler.
  case pndm = "pndm"
  /// Euler (`EulerDiscreteScheduler`), deterministic.
  case euler = "euler"
  /// Euler ancestral (`EulerAncestralDiscreteScheduler`): fresh noise at every step.
  case eulerAncestral = "euler-a"
  /// Linear multistep of order 4 (`LMSDiscreteScheduler`).
  case lms = "lms"
  /// DPM-Solver++(2M) (`DPMSolverMultistepScheduler`, `algorithm_type` from the config).
  case dpmSolverMultistep = "dpm++2m"
  /// DPM-Solver++(2M) on Karras σs (`use_karras_sigmas=True`).
  case dpmSolverMultistepKarras = "dpm++2m-karras"
  /// The stochastic DPM-Solver++(2M) SDE (`algorithm_type="sde-dpmsolver++"`), on Karras σs
  /// as it is usually run.
  case dpmSolverMultistepSDEKarras = "dpm++2m-sde-karras"
  /// Latent consistency sampling (`LCMScheduler`): LCM models and LCM-LoRA, 2–8 steps.
  case lcm = "lcm"
  /// Trajectory consistency sampling (`TCDScheduler`): TCD and Hyper-SD LoRAs, with γ = `eta`.
  case tcd = "tcd"

  /// The sampler named on the command line (`ddim`, `euler-a`, `dpm++2m-karras`, ...).
  public init?(name: String) {
    self.init(rawValue: name.lowercased())
  }

  /// The diffusers classes this runtime implements.
  public static let classNames = [
    "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", "LCMScheduler", "TCDScheduler",
  ]

  /// The sampler of a diffusers `_class_name`, or nil for one this runtime lacks.
  public init?(className: String) {
    switch className {
    case "DDIMScheduler": self = .ddim
    case "PNDMScheduler": self = .pndm
    case "EulerDiscreteScheduler": self = .euler
    case "EulerAncestralDiscreteScheduler": self = .eulerAncestral
    case "LMSDiscreteScheduler": self = .lms
    case "DPMSolverMultistepScheduler": self = .dpmSolverMultistep
    case "LCMScheduler": self = .lcm
    case "TCDScheduler": self = .tcd
    default: return nil
    }
  }
}

/// The noise levels a σ sampler steps through: the web UIs' "Schedule type".
public enum ScheduleType: String, CaseIterable, Sendable {
  /// The sampler's own: spaced by the model's `timestep_spacing`, Karras σs where the sampler
  /// name or `use_karras_sigmas` says so.
  case automatic = "default"
  /// Karras et al. 2022's σs (ρ = 7), as `use_karras_sigmas=True`.
  case karras = "karras"
  /// Align Your Steps (Sabour et al. 2024): the published SD 1.5 noise levels, log-linearly
  /// interpolated for step counts other than 10.
  case alignYourSteps = "ays"

  /// The name the web UIs write in a PNG's `Schedule type` ("Karras", "Align Your Steps").
  public var webUIName: String {
    switch self {
    case .automatic: "Automatic"
    case .karras: "Karras"
    case .alignYourSteps: "Align Your Steps"
    }
  }

  /// The samplers that step on σs of a chosen schedule (the others have fixed timesteps).
  public static let samplers: [SchedulerKind] = [
    .euler, .eulerAncestral, .lms, .dpmSolverMultistep, .dpmSolverMultistepKarras,
    .dpmSolverMultistepSDEKarras,
  ]

  /// `configuration` with this schedule's σ setting for `sampler`.
  /// - Throws: `PipelineError.invalidArgument` for a schedule on a sampler without σs, or Karras
  ///   σs on Euler ancestral (diffusers' class has none).
  func applied(to configuration: SchedulerConfiguration, sampler: SchedulerKind)
    throws(PipelineError) -> SchedulerConfiguration
  {
    guard self != .automatic else { return configuration }
    let usable = self == .karras ? Self.samplers.filter { $0 != .eulerAncestral } : Self.samplers
    guard usable.contains(sampler) else {
      throw .invalidArgument(
        name: "schedule",
        reason:
          "\(rawValue) needs one of the samplers \(usable.map(\.rawValue).joined(separator: ", ")), not \(sampler.rawValue)"
      )
    }
    var adjusted = configuration
    switch self {
    case .automatic: break
    case .karras: adjusted.useKarrasSigmas = true
    case .alignYourSteps: adjusted.useAlignYourStepsSigmas = true
    }
    return adjusted
  }
}

/// Builds a sampler of `kind` for `steps` steps from the model's scheduler settings, with the
/// defaults diffusers' class of that sampler uses for keys the file does not have. `eta` is the
/// pipeline argument of that name: TCD's γ (other samplers ignore it). `schedule` picks the σs
/// of the σ samplers.
/// - Throws: `PipelineError.invalidSchedulerConfiguration` for settings this runtime does not
///   implement, `.invalidArgument` for a step count out of range or a schedule the sampler
///   cannot use.
public func makeScheduler(
  _ kind: SchedulerKind, configuration: SchedulerConfiguration, steps: Int, eta: Double = 0,
  schedule: ScheduleType = .automatic
) throws(PipelineError) -> any Scheduler {
  guard steps >= 1, steps <= configuration.trainTimesteps else {
    throw .invalidArgument(
      name: "steps", reason: "must be in 1...\(configuration.trainTimesteps), got \(steps)")
  }
  let configuration = try schedule.applied(to: configuration, sampler: kind)
  let scheduler = try makeUncheckedScheduler(
    kind, configuration: configuration, steps: steps, eta: eta)
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
  _ kind: SchedulerKind, configuration: SchedulerConfiguration, steps: Int, eta: Double
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
  case .lcm: return try LCMScheduler(configuration: configuration, steps: steps)
  case .tcd: return try TCDScheduler(configuration: configuration, steps: steps, gamma: eta)
  }
}

// What the samplers share: inference timestep spacing, the σ tables of the k-diffusion-style
// samplers (and their protocol) and the conversions between a model output and x₀, each as
// diffusers 0.42 computes them.

import Foundation
import SDTensor

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

  /// Align Your Steps (Sabour et al. 2024): the published 10-step noise levels for SD 1.5, as
  /// diffusers' `AysSchedules["StableDiffusionSigmas"]` and the web UIs list them, with the 11th
  /// level (0.029) that their 10-step list replaces by 0.
  static let alignYourStepsLevels = [
    14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029,
  ]

  /// `steps` AYS σs, descending. The step count's `steps + 1` noise levels are the published
  /// ones interpolated linearly in log σ (the paper's `loglinear_interp`, as ComfyUI and
  /// stable-diffusion.cpp do); the last level is replaced by the final σ 0, so 10 steps give
  /// exactly diffusers' list.
  static func alignYourSteps(steps: Int) -> [Double] {
    let published = alignYourStepsLevels
    guard steps + 1 != published.count else { return Array(published.dropLast()) }
    // np.interp over ascending x ∈ [0, 1] of the levels in ascending order, then back.
    let logLevels = published.reversed().map { log($0) }
    let segments = Double(logLevels.count - 1)
    let interpolated = linspace(0, 1, steps + 1).map { x -> Double in
      let position = x * segments
      let low = min(Int(position.rounded(.down)), logLevels.count - 2)
      let w = position - Double(low)
      return exp(logLevels[low] + w * (logLevels[low + 1] - logLevels[low]))
    }
    return Array(interpolated.reversed().dropLast())
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

/// The timesteps, σs and initial noise of the σ samplers (Euler, Euler ancestral, LMS) for one
/// run, as their diffusers classes' `set_timesteps` make them.
struct SigmaSteps {
  let timesteps: [Float]
  /// σ at each step, then the final σ (0, or σ_min).
  let sigmas: [Double]
  /// σ_max, or √(σ_max² + 1) for `leading` spacing (whose first timestep is below the last
  /// training one).
  let initNoiseSigma: Float

  init(
    _ configuration: SchedulerConfiguration, steps: Int, karras: Bool, finalSigmaMin: Bool,
    zeroSNR: SchedulerConfiguration.ZeroSNRHandling = .finiteTerminalSigma
  ) {
    let spacing = configuration.timestepSpacing ?? .linspace
    let table = SigmaSchedule(alphasCumprod: configuration.alphasCumprod(zeroSNR: zeroSNR))
    var stepTimesteps = spacedTimesteps(
      spacing, steps: steps, trainTimesteps: configuration.trainTimesteps,
      stepsOffset: configuration.stepsOffset
    ).map { Double(Float($0)) }
    var stepSigmas = table.interpolated(at: stepTimesteps)
    if configuration.useAlignYourStepsSigmas {
      // As diffusers' `set_timesteps(sigmas:)`: float32 σs, their timesteps, a final 0.
      stepSigmas = SigmaSchedule.alignYourSteps(steps: steps).map { Double(Float($0)) }
      stepTimesteps = stepSigmas.map(table.timestep(of:))
    } else if karras {
      stepSigmas = SigmaSchedule.karras(
        sigmaMin: configuration.sigmaMin ?? stepSigmas[stepSigmas.count - 1],
        sigmaMax: configuration.sigmaMax ?? stepSigmas[0], steps: steps)
      stepTimesteps = stepSigmas.map(table.timestep(of:))
    }
    let last = finalSigmaMin && !configuration.useAlignYourStepsSigmas ? table.trainingSigmas[0] : 0
    sigmas = (stepSigmas + [last]).map { Double(Float($0)) }
    timesteps = stepTimesteps.map { Float($0) }
    let maximum = Float(sigmas.max() ?? 0)
    initNoiseSigma = spacing == .leading ? (maximum * maximum + 1).squareRoot() : maximum
  }
}

/// The samplers parametrised by σ, where a noised sample is x₀ + σ·ε (Euler, Euler ancestral,
/// LMS): they share the input scaling and the forward noising.
public protocol SigmaScheduler: Scheduler {
  /// σ at each step, then the final σ.
  var sigmas: [Double] { get }
}

extension SigmaScheduler {
  /// x / √(σ² + 1): the UNet sees unit-variance input (Karras et al. 2022, c_in).
  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor {
    let sigma = sigmas[stepIndex]
    return sample * (1 / Float(sigma * sigma + 1).squareRoot())
  }

  /// x₀ + σ·ε at the step's σ.
  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    sample + noise * Float(sigmas[stepIndex])
  }
}

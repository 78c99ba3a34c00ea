// Euler's method on the probability-flow ODE in σ (Karras et al. 2022, algorithm 2 without
// churn), as diffusers' EulerDiscreteScheduler steps it.

import Foundation
import SDTensor

/// Euler: x_{i+1} = x_i + (σ_{i+1} − σ_i)·(x_i − x̂₀)/σ_i.
public struct EulerDiscreteScheduler: SigmaScheduler {
  public let timesteps: [Float]
  public let initNoiseSigma: Float
  public let inferenceSteps: Int
  /// σ at each step, plus the final σ (0, or σ_min with `final_sigmas_type: sigma_min`).
  public let sigmas: [Double]
  let prediction: PredictionType

  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    let schedule = SigmaSteps(
      configuration, steps: steps, karras: configuration.useKarrasSigmas,
      finalSigmaMin: configuration.finalSigmasType == "sigma_min")
    (timesteps, sigmas, initNoiseSigma) = (
      schedule.timesteps, schedule.sigmas, schedule.initNoiseSigma
    )
    prediction = configuration.predictionType
    inferenceSteps = steps
  }

  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let sigma = sigmas[stepIndex]
    let original = originalSample(prediction, output: noisePrediction, sample: sample, sigma: sigma)
    let derivative = (sample - original) * Float(1 / sigma)
    return sample + derivative * Float(sigmas[stepIndex + 1] - sigma)
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

  init(_ configuration: SchedulerConfiguration, steps: Int, karras: Bool, finalSigmaMin: Bool) {
    let spacing = configuration.timestepSpacing ?? .linspace
    let table = SigmaSchedule(alphasCumprod: configuration.alphasCumprod())
    var stepTimesteps = spacedTimesteps(
      spacing, steps: steps, trainTimesteps: configuration.trainTimesteps,
      stepsOffset: configuration.stepsOffset
    ).map { Double(Float($0)) }
    var stepSigmas = table.interpolated(at: stepTimesteps)
    if karras {
      stepSigmas = SigmaSchedule.karras(
        sigmaMin: configuration.sigmaMin ?? stepSigmas[stepSigmas.count - 1],
        sigmaMax: configuration.sigmaMax ?? stepSigmas[0], steps: steps)
      stepTimesteps = stepSigmas.map(table.timestep(of:))
    }
    let last = finalSigmaMin ? table.trainingSigmas[0] : 0
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

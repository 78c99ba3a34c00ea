// Euler's method on the probability-flow ODE in σ (Karras et al. 2022, algorithm 2 without
// churn), as diffusers' EulerDiscreteScheduler steps it.

import Foundation
import SDTensor

/// Euler: x_{i+1} = x_i + (σ_{i+1} − σ_i)·(x_i − x̂₀)/σ_i.
public struct EulerDiscreteScheduler: SigmaScheduler {
  /// The UNet's timesteps, descending: spaced by `timestep_spacing` (default `linspace`), or
  /// those of the Karras σs with `use_karras_sigmas`.
  public let timesteps: [Float]
  /// σ_max (√(σ_max² + 1) with `leading` spacing): the initial noise's standard deviation.
  public let initNoiseSigma: Float
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  /// σ at each step, plus the final σ (0, or σ_min with `final_sigmas_type: sigma_min`).
  public let sigmas: [Double]
  let prediction: PredictionType

  /// The timesteps and σs of `steps` steps from `configuration`, with EulerDiscrete's class
  /// defaults for unset keys (`linspace` spacing).
  /// - Throws: never at present (declared like the samplers that check their settings).
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

  /// One Euler step from σ_i to σ_{i+1} along d = (x − x̂₀)/σ_i. `generator` is unused.
  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let sigma = sigmas[stepIndex]
    let original = originalSample(prediction, output: noisePrediction, sample: sample, sigma: sigma)
    let derivative = (sample - original) * Float(1 / sigma)
    return sample + derivative * Float(sigmas[stepIndex + 1] - sigma)
  }
}

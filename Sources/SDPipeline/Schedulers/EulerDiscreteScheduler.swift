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

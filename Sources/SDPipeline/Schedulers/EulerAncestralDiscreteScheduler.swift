// Ancestral Euler (k-diffusion's sample_euler_ancestral with η = 1), as diffusers'
// EulerAncestralDiscreteScheduler steps it: an Euler step down to σ_down, then fresh noise of
// σ_up, drawn from the run's generator at every step.

import SDTensor

/// Euler ancestral: x_{i+1} = x_i + (σ_down − σ_i)·d_i + σ_up·z, z ~ N(0, I).
public struct EulerAncestralDiscreteScheduler: SigmaScheduler {
  public let timesteps: [Float]
  public let initNoiseSigma: Float
  public let inferenceSteps: Int
  public let sigmas: [Double]
  let prediction: PredictionType

  /// - Throws: `PipelineError.invalidSchedulerConfiguration` for `prediction_type: sample`,
  ///   which diffusers does not implement for this sampler either.
  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    guard configuration.predictionType != .sample else {
      throw .invalidSchedulerConfiguration(
        file: configuration.file,
        reason: "Euler ancestral supports 'epsilon' and 'v_prediction' only")
    }
    let schedule = SigmaSteps(configuration, steps: steps, karras: false, finalSigmaMin: false)
    (timesteps, sigmas, initNoiseSigma) = (
      schedule.timesteps, schedule.sigmas, schedule.initNoiseSigma
    )
    prediction = configuration.predictionType
    inferenceSteps = steps
  }

  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let (from, to) = (sigmas[stepIndex], sigmas[stepIndex + 1])
    let original = originalSample(prediction, output: noisePrediction, sample: sample, sigma: from)
    let up = (to * to * (from * from - to * to) / (from * from)).squareRoot()
    let down = (to * to - up * up).squareRoot()
    let derivative = (sample - original) * Float(1 / from)
    let deterministic = sample + derivative * Float(down - from)
    return deterministic + generator.randn(noisePrediction.shape) * Float(up)
  }
}

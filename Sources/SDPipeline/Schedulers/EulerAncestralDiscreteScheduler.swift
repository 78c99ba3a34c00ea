// Ancestral Euler (k-diffusion's sample_euler_ancestral with η = 1), as diffusers'
// EulerAncestralDiscreteScheduler steps it: an Euler step down to σ_down, then fresh noise of
// σ_up, drawn from the run's generator at every step.

import SDTensor

/// Euler ancestral: x_{i+1} = x_i + (σ_down − σ_i)·d_i + σ_up·z, z ~ N(0, I).
public struct EulerAncestralDiscreteScheduler: SigmaScheduler {
  /// The UNet's timesteps, descending, spaced by `timestep_spacing` (default `linspace`).
  public let timesteps: [Float]
  /// σ_max (√(σ_max² + 1) with `leading` spacing): the initial noise's standard deviation.
  public let initNoiseSigma: Float
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  /// σ at each step, then 0.
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

  /// One ancestral step: Euler from σ_i down to σ_down, then noise of σ_up drawn from
  /// `generator`, where σ_down² + σ_up² = σ_{i+1}².
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

// Trajectory consistency distillation sampling (Zheng et al. 2024, "Trajectory Consistency
// Distillation", strategic stochastic sampling, eq. 9), as diffusers' TCDScheduler steps it:
// the model's x̂₀ and ε̂ go to an intermediate timestep s = ⌊(1 − γ)·t'⌋, and from there to the
// next timestep t' with fresh noise of weight γ.

import SDTensor

/// TCD with γ (`eta`): x_s = √ᾱ_s·x̂₀ + √(1 − ᾱ_s)·ε̂, then
/// x_{t'} = √(ᾱ_{t'}/ᾱ_s)·x_s + √(1 − ᾱ_{t'}/ᾱ_s)·z (γ = 0: deterministic; no noise at the last step).
public struct TCDScheduler: Scheduler {
  /// `steps` of the distillation schedule's timesteps (every T/`original_inference_steps`-th
  /// from T − 1 down), taken evenly by index, as for LCM.
  public let timesteps: [Float]
  /// 1: the initial latents are unit Gaussian noise.
  public let initNoiseSigma: Float = 1
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  let alphasCumprod: [Double]
  let prediction: PredictionType
  /// γ in [0, 1], diffusers' `eta` argument of the step.
  let gamma: Double

  /// - Throws: `.invalidArgument` for γ outside [0, 1].
  public init(configuration: SchedulerConfiguration, steps: Int, gamma: Double)
    throws(PipelineError)
  {
    guard gamma.isFinite, gamma >= 0, gamma <= 1 else {
      throw .invalidArgument(name: "eta", reason: "TCD's gamma must be in [0, 1], got \(gamma)")
    }
    timesteps = try consistencyTimesteps(configuration, steps: steps, sampler: "tcd")
    alphasCumprod = configuration.alphasCumprod()
    prediction = configuration.predictionType
    self.gamma = gamma
    inferenceSteps = steps
  }

  /// `sample` unchanged: TCD's UNet input is not scaled.
  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

  /// One step: x̂₀ and ε̂ at t taken to s = ⌊(1 − γ)·t'⌋, then to the next timestep t' with
  /// noise from `generator` (none when γ = 0 or at the last step, which ends at s = 0).
  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let t = Int(timesteps[stepIndex])
    let next = stepIndex + 1 < timesteps.count ? Int(timesteps[stepIndex + 1]) : 0
    let s = Int(((1 - gamma) * Double(next)).rounded(.down))
    let (original, epsilon) = originalSampleAndNoise(
      prediction, output: noisePrediction, sample: sample, alphaProduct: alphasCumprod[t])
    let noised = addNoiseAtTimestep(original, noise: epsilon, alphaProduct: alphasCumprod[s])
    guard gamma > 0, stepIndex != inferenceSteps - 1 else { return noised }
    let ratio = alphasCumprod[next] / alphasCumprod[s]
    let noise = generator.randn(noisePrediction.shape)
    return Float(ratio.squareRoot()) * noised + Float((1 - ratio).squareRoot()) * noise
  }

  /// √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at t = `timesteps[stepIndex]`.
  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    addNoiseAtTimestep(sample, noise: noise, alphaProduct: alphasCumprod[Int(timesteps[stepIndex])])
  }
}

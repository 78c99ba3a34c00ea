// Latent consistency sampling (Luo et al. 2023, "Latent Consistency Models", algorithm 3), as
// diffusers' LCMScheduler steps it: each step maps the sample to the consistency function's x₀
// estimate, then re-noises it to the next timestep with fresh noise from the run's generator.

import Foundation
import SDTensor

/// The timesteps of the consistency samplers (LCM, TCD): every `k`-th of the training steps,
/// k = train / `original_inference_steps` (the distillation schedule), `steps` of them taken
/// evenly by index, as diffusers' `set_timesteps` does.
func consistencyTimesteps(
  _ configuration: SchedulerConfiguration, steps: Int, sampler: String
) throws(PipelineError) -> [Float] {
  let original = configuration.originalInferenceSteps ?? 50
  guard original >= 1, original <= configuration.trainTimesteps else {
    throw .invalidSchedulerConfiguration(
      file: configuration.file,
      reason: "'original_inference_steps' must be in 1...\(configuration.trainTimesteps)")
  }
  guard steps <= original else {
    throw .invalidArgument(
      name: "steps",
      reason:
        "\(sampler) takes at most original_inference_steps = \(original) steps, got \(steps)")
  }
  let k = configuration.trainTimesteps / original
  let origin = (1...original).reversed().map { $0 * k - 1 }
  let spacing = Double(origin.count) / Double(steps)
  return (0..<steps).map { Float(origin[Int((Double($0) * spacing).rounded(.down))]) }
}

/// LCM: x̂₀ from the model output, the boundary-condition mix x̄ = c_out·x̂₀ + c_skip·x_t, then
/// x_{t'} = √ᾱ_{t'}·x̄ + √(1 − ᾱ_{t'})·z (no noise at the last step).
public struct LCMScheduler: Scheduler {
  /// `steps` of the distillation schedule's timesteps (every T/`original_inference_steps`-th
  /// from T − 1 down), taken evenly by index.
  public let timesteps: [Float]
  /// 1: the initial latents are unit Gaussian noise.
  public let initNoiseSigma: Float = 1
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  let alphasCumprod: [Double]
  let prediction: PredictionType
  let clipRange: Float?
  /// `timestep_scaling`: t is multiplied by it in c_skip and c_out.
  let timestepScaling: Double

  /// The timesteps of `steps` steps from `configuration`, with LCMScheduler's class defaults for
  /// unset keys (`original_inference_steps` 50, `timestep_scaling` 10, no `clip_sample`).
  /// - Throws: `PipelineError.invalidSchedulerConfiguration` for `original_inference_steps` out
  ///   of range, `.invalidArgument` when `steps` exceeds it.
  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    timesteps = try consistencyTimesteps(configuration, steps: steps, sampler: "lcm")
    alphasCumprod = configuration.alphasCumprod()
    prediction = configuration.predictionType
    clipRange = configuration.clipSample ?? false ? Float(configuration.clipSampleRange) : nil
    timestepScaling = configuration.timestepScaling ?? 10
    inferenceSteps = steps
  }

  /// `sample` unchanged: LCM's UNet input is not scaled.
  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

  /// One step: the boundary-condition mix c_out·x̂₀ + c_skip·x_t (x̂₀ clamped with
  /// `clip_sample`), re-noised to the next timestep with noise from `generator`; the last step
  /// returns the mix itself.
  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let t = Int(timesteps[stepIndex])
    // The last step's "next" timestep is its own (diffusers), which no noise reaches anyway.
    let next = stepIndex + 1 < timesteps.count ? Int(timesteps[stepIndex + 1]) : t
    // Boundary conditions with σ_data = 0.5 (the consistency-model parametrisation, eq. 2).
    let scaled = Double(t) * timestepScaling
    let cSkip = 0.25 / (scaled * scaled + 0.25)
    let cOut = scaled / (scaled * scaled + 0.25).squareRoot()
    var (original, _) = originalSampleAndNoise(
      prediction, output: noisePrediction, sample: sample, alphaProduct: alphasCumprod[t])
    if let clipRange { original = original.map { min(max($0, -clipRange), clipRange) } }
    let denoised = Float(cOut) * original + Float(cSkip) * sample
    guard stepIndex != inferenceSteps - 1 else { return denoised }
    let noise = generator.randn(noisePrediction.shape)
    return addNoiseAtTimestep(denoised, noise: noise, alphaProduct: alphasCumprod[next])
  }

  /// √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at t = `timesteps[stepIndex]`.
  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    addNoiseAtTimestep(sample, noise: noise, alphaProduct: alphasCumprod[Int(timesteps[stepIndex])])
  }
}

// DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 with η = 0), as
// diffusers' DDIMScheduler steps it.

import SDTensor

/// Deterministic DDIM: x_{t−Δ} = √ᾱ_{t−Δ}·x̂₀ + √(1 − ᾱ_{t−Δ})·ε̂.
public struct DDIMScheduler: Scheduler {
  /// The UNet's timesteps, descending, spaced by `timestep_spacing` (default `leading`) and
  /// rounded to integers.
  public let timesteps: [Float]
  /// 1: the initial latents are unit Gaussian noise.
  public let initNoiseSigma: Float = 1
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  let alphasCumprod: [Double]
  /// ᾱ before the first training step: 1 with `set_alpha_to_one`, else ᾱ₀.
  let finalAlphaCumprod: Double
  let stride: Int
  let prediction: PredictionType
  /// Clamp x̂₀ to ±range (`clip_sample`; DDIM's class default is on).
  let clipRange: Float?

  /// The schedule of `steps` steps from `configuration`, with DDIM's class defaults for unset
  /// keys (`leading` spacing, `set_alpha_to_one` and `clip_sample` on).
  /// - Throws: never at present (declared like the samplers that check their settings).
  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    alphasCumprod = configuration.alphasCumprod()
    finalAlphaCumprod = configuration.setAlphaToOne ?? true ? 1 : alphasCumprod[0]
    stride = configuration.trainTimesteps / steps
    prediction = configuration.predictionType
    clipRange = configuration.clipSample ?? true ? Float(configuration.clipSampleRange) : nil
    inferenceSteps = steps
    timesteps = spacedTimesteps(
      configuration.timestepSpacing ?? .leading, steps: steps,
      trainTimesteps: configuration.trainTimesteps,
      stepsOffset: configuration.stepsOffset
    ).map { Float($0.rounded(.toNearestOrEven)) }
  }

  /// `sample` unchanged: DDIM's UNet input is not scaled.
  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

  /// One step from `timesteps[stepIndex]` to the timestep T/steps below: x̂₀ (clamped with
  /// `clip_sample`) and ε̂ from the model output, recombined at the lower ᾱ. `generator` is unused.
  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let t = Int(timesteps[stepIndex])
    let previous = t - stride
    let alphaProduct = alphasCumprod[t]
    let previousAlphaProduct = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
    var (original, noise) = originalSampleAndNoise(
      prediction, output: noisePrediction, sample: sample, alphaProduct: alphaProduct)
    if let clipRange { original = original.map { min(max($0, -clipRange), clipRange) } }
    return Float(previousAlphaProduct.squareRoot()) * original + Float(
      (1 - previousAlphaProduct).squareRoot()) * noise
  }

  /// √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at t = `timesteps[stepIndex]`.
  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    addNoiseAtTimestep(sample, noise: noise, alphaProduct: alphasCumprod[Int(timesteps[stepIndex])])
  }
}

/// √ᾱ·x₀ + √(1 − ᾱ)·ε: the forward process at one training timestep (DDPM eq. 4).
func addNoiseAtTimestep(_ sample: Tensor, noise: Tensor, alphaProduct: Double) -> Tensor {
  Float(alphaProduct.squareRoot()) * sample + Float((1 - alphaProduct).squareRoot()) * noise
}

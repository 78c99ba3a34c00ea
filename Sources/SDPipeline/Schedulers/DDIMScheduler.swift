// DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 with η = 0), as
// diffusers' DDIMScheduler steps it.

import SDTensor

/// Deterministic DDIM: x_{t−Δ} = √ᾱ_{t−Δ}·x̂₀ + √(1 − ᾱ_{t−Δ})·ε̂.
public struct DDIMScheduler: Scheduler {
  public let timesteps: [Float]
  public let initNoiseSigma: Float = 1
  public let inferenceSteps: Int
  let alphasCumprod: [Double]
  /// ᾱ before the first training step: 1 with `set_alpha_to_one`, else ᾱ₀.
  let finalAlphaCumprod: Double
  let stride: Int
  let prediction: PredictionType
  /// Clamp x̂₀ to ±range (`clip_sample`; DDIM's class default is on).
  let clipRange: Float?

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

  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

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

  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    addNoiseAtTimestep(sample, noise: noise, alphaProduct: alphasCumprod[Int(timesteps[stepIndex])])
  }
}

/// √ᾱ·x₀ + √(1 − ᾱ)·ε: the forward process at one training timestep (DDPM eq. 4).
func addNoiseAtTimestep(_ sample: Tensor, noise: Tensor, alphaProduct: Double) -> Tensor {
  Float(alphaProduct.squareRoot()) * sample + Float((1 - alphaProduct).squareRoot()) * noise
}

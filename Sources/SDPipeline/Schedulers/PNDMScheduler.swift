// PNDM's pseudo linear multistep sampler (Liu et al. 2022, "Pseudo Numerical Methods for
// Diffusion Models", eq. 12 and 9), in the PLMS-only form SD uses (`skip_prk_steps`), as
// diffusers' PNDMScheduler steps it: the first step runs twice (a Heun-like start), so there is
// one more UNet call than steps.

import SDTensor

/// PLMS: fourth-order Adams–Bashforth on ε, after a two-call first step.
public struct PNDMScheduler: Scheduler {
  /// The UNet's timesteps, descending (default `leading` spacing), the second one repeated for
  /// the two-call first step: `steps + 1` of them when `steps` > 1.
  public let timesteps: [Float]
  /// 1: the initial latents are unit Gaussian noise.
  public let initNoiseSigma: Float = 1
  /// The step count asked for; the UNet runs `timesteps.count` times, once more.
  public let inferenceSteps: Int
  let alphasCumprod: [Double]
  let finalAlphaCumprod: Double
  let stride: Int
  let prediction: PredictionType
  /// The last ε predictions, newest last (at most 4).
  var history: [Tensor] = []
  /// The sample the two-call first step started from.
  var firstSample: Tensor?
  var counter = 0

  /// - Throws: `PipelineError.invalidSchedulerConfiguration` when `skip_prk_steps` is false
  ///   (the Runge–Kutta warm-up is not implemented; every SD checkpoint skips it) or the
  ///   prediction type is `sample`.
  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    guard configuration.skipPRKSteps == true else {
      throw .invalidSchedulerConfiguration(
        file: configuration.file,
        reason: "PNDM needs 'skip_prk_steps': true (the PRK warm-up is not implemented)")
    }
    guard configuration.predictionType != .sample else {
      throw .invalidSchedulerConfiguration(
        file: configuration.file, reason: "PNDM supports 'epsilon' and 'v_prediction' only")
    }
    alphasCumprod = configuration.alphasCumprod(zeroSNR: .ignored)
    finalAlphaCumprod = configuration.setAlphaToOne ?? false ? 1 : alphasCumprod[0]
    stride = configuration.trainTimesteps / steps
    prediction = configuration.predictionType
    inferenceSteps = steps
    // Ascending timesteps t₀ < t₁ < … ; the schedule is t_{n−1}, t_{n−2}, t_{n−2}, …, t₀.
    let ascending = spacedTimesteps(
      configuration.timestepSpacing ?? .leading, steps: steps,
      trainTimesteps: configuration.trainTimesteps,
      stepsOffset: configuration.stepsOffset
    ).reversed().map { $0.rounded(.toNearestOrEven) }
    let schedule =
      Array(ascending.dropLast()) + (ascending.count > 1 ? [ascending[ascending.count - 2]] : [])
      + [ascending[ascending.count - 1]]
    timesteps = schedule.reversed().map { Float($0) }
  }

  /// `sample` unchanged: PNDM's UNet input is not scaled.
  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

  /// One call at `timesteps[stepIndex]`: the first two make the Heun-like first step, later ones
  /// combine the last (up to 4) ε predictions (Adams–Bashforth) and transfer by PNDM eq. 9.
  /// Calls must come in order, since the sampler counts them. `generator` is unused.
  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    var timestep = Int(timesteps[stepIndex])
    var previous = timestep - stride
    if counter != 1 {
      history = Array(history.suffix(3)) + [noisePrediction]
    } else {
      // The second call of the first step re-evaluates from the same sample at the same target.
      previous = timestep
      timestep += stride
    }
    var current = sample
    let epsilon: Tensor
    switch (history.count, counter) {
    case (1, 0):
      epsilon = noisePrediction
      firstSample = sample
    case (1, 1):
      epsilon = (noisePrediction + history[0]) * 0.5
      current = firstSample ?? sample
      firstSample = nil
    case (2, _):
      epsilon = (3 * history[1] - history[0]) * 0.5
    case (3, _):
      epsilon = (23 * history[2] - 16 * history[1] + 5 * history[0]) * (1 / 12)
    default:
      epsilon = (55 * history[3] - 59 * history[2] + 37 * history[1] - 9 * history[0]) * (1 / 24)
    }
    counter += 1
    return previousSample(current, timestep: timestep, previous: previous, output: epsilon)
  }

  /// PNDM eq. 9: the transfer from t to t − Δ given ε.
  private func previousSample(_ sample: Tensor, timestep: Int, previous: Int, output: Tensor)
    -> Tensor
  {
    let alpha = alphasCumprod[timestep]
    let alphaPrevious = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
    let beta = 1 - alpha
    let betaPrevious = 1 - alphaPrevious
    let epsilon =
      prediction == .vPrediction
      ? Float(alpha.squareRoot()) * output + Float(beta.squareRoot()) * sample : output
    let sampleCoefficient = (alphaPrevious / alpha).squareRoot()
    let denominator =
      alpha * betaPrevious.squareRoot() + (alpha * beta * alphaPrevious).squareRoot()
    return Float(sampleCoefficient) * sample - Float((alphaPrevious - alpha) / denominator)
      * epsilon
  }

  /// √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at t = `timesteps[stepIndex]`.
  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    addNoiseAtTimestep(sample, noise: noise, alphaProduct: alphasCumprod[Int(timesteps[stepIndex])])
  }
}

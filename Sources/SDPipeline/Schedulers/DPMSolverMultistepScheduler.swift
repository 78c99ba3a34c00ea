// DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
// Probabilistic Models", algorithm 2 = 2M) and its SDE variant (`sde-dpmsolver++`), as
// diffusers' DPMSolverMultistepScheduler steps them, with optional Karras (or AYS) σs.

import Foundation
import SDTensor

/// DPM-Solver++(2M): a second-order multistep solver in λ = log(α/σ) on the data prediction x̂₀.
public struct DPMSolverMultistepScheduler: Scheduler {
  /// The UNet's timesteps, descending: spaced by `timestep_spacing` (default `linspace`), or
  /// those of the Karras σs with `use_karras_sigmas` (of the AYS σs with
  /// `useAlignYourStepsSigmas`).
  public let timesteps: [Float]
  /// 1: the solver works on the variance-preserving sample, so the initial noise is unit Gaussian.
  public let initNoiseSigma: Float = 1
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  /// σ at each step plus the final σ.
  let sigmas: [Double]
  let prediction: PredictionType
  let stochastic: Bool
  let heun: Bool
  let solverOrder: Int
  let lowerOrderFinal: Bool
  let eulerAtFinal: Bool
  let finalSigmaIsZero: Bool
  /// The last two x̂₀, newest last.
  var dataPredictions: [Tensor] = []
  var lowerOrderSteps = 0

  /// The timesteps and σs of `steps` steps from `configuration`, with DPMSolverMultistep's class
  /// defaults for unset keys (`linspace` spacing, order 2, `lower_order_final`).
  /// - Throws: never at present (declared like the samplers that check their settings).
  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    let trainSteps = configuration.trainTimesteps
    let table = SigmaSchedule(
      alphasCumprod: configuration.alphasCumprod(zeroSNR: .finiteTerminalSigma))
    // `lambda_min_clipped` is −∞ in every SD config, so the whole training range is used.
    var stepTimesteps: [Double]
    switch configuration.timestepSpacing ?? .linspace {
    case .linspace:
      stepTimesteps = Array(
        linspace(0, Double(trainSteps - 1), steps + 1).map { $0.rounded(.toNearestOrEven) }
          .reversed().dropLast())
    case .leading:
      let ratio = trainSteps / (steps + 1)
      stepTimesteps = (1...steps).reversed().map { Double($0 * ratio + configuration.stepsOffset) }
    case .trailing:
      let ratio = Double(trainSteps) / Double(steps)
      stepTimesteps = stride(from: Double(trainSteps), to: 0, by: -ratio).map {
        $0.rounded(.toNearestOrEven) - 1
      }
    }
    var stepSigmas: [Double]
    if configuration.useAlignYourStepsSigmas {
      // In the place of the Karras σs, with their rounded timesteps.
      stepSigmas = SigmaSchedule.alignYourSteps(steps: steps)
      stepTimesteps = stepSigmas.map { table.timestep(of: $0).rounded(.toNearestOrEven) }
    } else if configuration.useKarrasSigmas {
      stepSigmas = SigmaSchedule.karras(
        sigmaMin: configuration.sigmaMin ?? table.trainingSigmas[0],
        sigmaMax: configuration.sigmaMax ?? table.trainingSigmas[trainSteps - 1], steps: steps)
      stepTimesteps = stepSigmas.map { table.timestep(of: $0).rounded(.toNearestOrEven) }
    } else {
      stepSigmas = table.interpolated(at: stepTimesteps)
    }
    finalSigmaIsZero = configuration.finalSigmasType == "zero"
    let last = finalSigmaIsZero ? 0 : table.trainingSigmas[0]
    sigmas = (stepSigmas + [last]).map { Double(Float($0)) }
    timesteps = stepTimesteps.map { Float($0) }
    prediction = configuration.predictionType
    stochastic = configuration.algorithmType == "sde-dpmsolver++"
    heun = configuration.solverType == "heun"
    solverOrder = configuration.solverOrder
    lowerOrderFinal = configuration.lowerOrderFinal
    eulerAtFinal = configuration.eulerAtFinal
    inferenceSteps = steps
  }

  /// `sample` unchanged: DPM-Solver's UNet input is not scaled.
  public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

  /// α_t = 1/√(σ² + 1) and σ_t = σ·α_t of the variance-preserving process at σ.
  private func alphaSigma(_ sigma: Double) -> (alpha: Double, sigma: Double) {
    let alpha = 1 / (sigma * sigma + 1).squareRoot()
    return (alpha, sigma * alpha)
  }

  /// One step from σ_i to σ_{i+1} on x̂₀: first order at the first step and, with
  /// `euler_at_final`, `lower_order_final` (under 15 steps) or a final σ of 0, at the last;
  /// second order (midpoint or Heun) otherwise. The SDE variant draws noise from `generator`.
  public mutating func step(
    noisePrediction: Tensor, stepIndex i: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let count = timesteps.count
    // Few-step runs end with first-order steps, which are more stable (DPM-Solver++ §5).
    let firstOrderAtEnd =
      i == count - 1 && (eulerAtFinal || (lowerOrderFinal && count < 15) || finalSigmaIsZero)
    let (alphaS, sigmaS) = alphaSigma(sigmas[i])
    let data: Tensor
    switch prediction {
    case .epsilon: data = (sample - Float(sigmaS) * noisePrediction) * Float(1 / alphaS)
    case .sample: data = noisePrediction
    case .vPrediction: data = Float(alphaS) * sample - Float(sigmaS) * noisePrediction
    }
    dataPredictions = Array((dataPredictions + [data]).suffix(2))
    let noise = stochastic ? generator.randn(noisePrediction.shape) : nil

    let (alphaT, sigmaT) = alphaSigma(sigmas[i + 1])
    let lambdaT = log(alphaT) - log(sigmaT)
    let lambdaS = log(alphaS) - log(sigmaS)
    let h = lambdaT - lambdaS
    var next: Tensor
    if solverOrder == 1 || lowerOrderSteps < 1 || firstOrderAtEnd {
      if let noise {
        next =
          Float(sigmaT / sigmaS * exp(-h)) * sample + Float(alphaT * (1 - exp(-2 * h))) * data
          + Float(sigmaT * (1 - exp(-2 * h)).squareRoot()) * noise
      } else {
        next = Float(sigmaT / sigmaS) * sample - Float(alphaT * (exp(-h) - 1)) * data
      }
    } else {
      let (alphaPrevious, sigmaPrevious) = alphaSigma(sigmas[i - 1])
      let h0 = lambdaS - (log(alphaPrevious) - log(sigmaPrevious))
      let d1 = (dataPredictions[1] - dataPredictions[0]) * Float(h / h0)
      if let noise {
        let decay = 1 - exp(-2 * h)
        let d1Weight = heun ? alphaT * (decay / (-2 * h) + 1) : 0.5 * alphaT * decay
        next =
          Float(sigmaT / sigmaS * exp(-h)) * sample + Float(alphaT * decay) * data + Float(d1Weight)
          * d1
          + Float(sigmaT * decay.squareRoot()) * noise
      } else {
        let d1Weight = heun ? alphaT * ((exp(-h) - 1) / h + 1) : -0.5 * alphaT * (exp(-h) - 1)
        next =
          Float(sigmaT / sigmaS) * sample - Float(alphaT * (exp(-h) - 1)) * data + Float(d1Weight)
          * d1
      }
    }
    lowerOrderSteps = min(lowerOrderSteps + 1, solverOrder)
    return next
  }

  /// α_t·x₀ + σ_t·ε at the step's σ, with α_t = 1/√(σ² + 1) and σ_t = σ·α_t.
  public func addNoise(to sample: Tensor, noise: Tensor, stepIndex: Int) -> Tensor {
    let (alpha, sigma) = alphaSigma(sigmas[stepIndex])
    return Float(alpha) * sample + Float(sigma) * noise
  }
}

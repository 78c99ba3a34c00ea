// Linear multistep in σ (k-diffusion's sample_lms, order 4), as diffusers' LMSDiscreteScheduler
// steps it: the next sample adds the last derivatives weighted by the integrals of their
// Lagrange basis polynomials over [σ_i, σ_{i+1}].

import SDTensor

/// LMS: x_{i+1} = x_i + Σ_j c_j·d_{i−j}, c_j = ∫ ℓ_j(σ) dσ from σ_i to σ_{i+1}.
public struct LMSDiscreteScheduler: SigmaScheduler {
  /// The UNet's timesteps, descending: spaced by `timestep_spacing` (default `linspace`), or
  /// those of the Karras σs with `use_karras_sigmas`.
  public let timesteps: [Float]
  /// σ_max (√(σ_max² + 1) with `leading` spacing): the initial noise's standard deviation.
  public let initNoiseSigma: Float
  /// The step count asked for; one UNet call each.
  public let inferenceSteps: Int
  /// σ at each step, then 0.
  public let sigmas: [Double]
  let prediction: PredictionType
  /// The last derivatives (x − x̂₀)/σ, newest last.
  var derivatives: [Tensor] = []
  static let order = 4

  /// The timesteps and σs of `steps` steps from `configuration`, with LMSDiscrete's class
  /// defaults for unset keys (`linspace` spacing).
  /// - Throws: never at present (declared like the samplers that check their settings).
  public init(configuration: SchedulerConfiguration, steps: Int) throws(PipelineError) {
    let schedule = SigmaSteps(
      configuration, steps: steps, karras: configuration.useKarrasSigmas, finalSigmaMin: false,
      zeroSNR: .ignored)
    (timesteps, sigmas, initNoiseSigma) = (
      schedule.timesteps, schedule.sigmas, schedule.initNoiseSigma
    )
    prediction = configuration.predictionType
    inferenceSteps = steps
  }

  /// One step from σ_i to σ_{i+1}: the last (up to 4) derivatives (x − x̂₀)/σ weighted by their
  /// Lagrange coefficients. `generator` is unused.
  public mutating func step(
    noisePrediction: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator
  ) -> Tensor {
    let sigma = sigmas[stepIndex]
    let original = originalSample(prediction, output: noisePrediction, sample: sample, sigma: sigma)
    derivatives = Array((derivatives + [(sample - original) * Float(1 / sigma)]).suffix(Self.order))
    let order = min(stepIndex + 1, Self.order)
    var next = sample
    for (j, derivative) in derivatives.reversed().prefix(order).enumerated() {
      next = next + derivative * Float(coefficient(order: order, stepIndex: stepIndex, term: j))
    }
    return next
  }

  /// ∫ over [σ_i, σ_{i+1}] of the Lagrange basis polynomial of node σ_{i−term} on the nodes
  /// σ_i … σ_{i−order+1}. The integrand has degree < 4, so 4-point Gauss–Legendre is exact
  /// (diffusers calls scipy's adaptive quad, which converges to the same value).
  func coefficient(order: Int, stepIndex i: Int, term: Int) -> Double {
    func basis(_ tau: Double) -> Double {
      var product = 1.0
      for k in 0..<order where k != term {
        product *= (tau - sigmas[i - k]) / (sigmas[i - term] - sigmas[i - k])
      }
      return product
    }
    let (a, b) = (sigmas[i], sigmas[i + 1])
    let nodes: [(x: Double, w: Double)] = [
      (-0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
      (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
      (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
      (0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
    ]
    let (half, middle) = ((b - a) / 2, (a + b) / 2)
    return half * nodes.reduce(0) { $0 + $1.w * basis(middle + half * $1.x) }
  }
}

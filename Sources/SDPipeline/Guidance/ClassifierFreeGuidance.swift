// Classifier-free guidance (Ho & Salimans 2022) with several weighted negatives, and guidance
// rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

import SDTensor

/// ε = ε_neg + s·(ε_pos − ε_neg).
func classifierFree(negative: Tensor, positive: Tensor, scale: Float) -> Tensor {
  negative + scale * (positive - negative)
}

/// ε̄ = Σ wᵢ·εᵢ / Σ wᵢ, the negative of classifier-free guidance with several negatives (one
/// negative is used as it is); nil when there are none.
func weightedMean(_ negatives: [(prediction: Tensor, weight: Float)]) -> Tensor? {
  guard let first = negatives.first else { return nil }
  if negatives.count == 1 { return first.prediction }
  let total = negatives.reduce(Float(0)) { $0 + $1.weight }
  var mean = first.prediction * (first.weight / total)
  for negative in negatives.dropFirst() {
    mean.add(negative.prediction * (negative.weight / total))
  }
  return mean
}

/// diffusers' `rescale_noise_cfg` (eq. 15–16): per batch item, scale `guided` to the standard
/// deviation (unbiased, over all non-batch axes) of `positive`, and blend by φ.
func rescaled(_ guided: Tensor, toMatch positive: Tensor, by phi: Float) -> Tensor {
  let items = guided.shape[0]
  let size = guided.count / items
  var out = guided.scalars
  for item in 0..<items {
    let range = item * size..<(item + 1) * size
    let ratio =
      standardDeviation(positive.scalars[range]) / standardDeviation(guided.scalars[range])
    for i in range {
      let value = guided.scalars[i]
      out[i] = phi * (value * Float(ratio)) + (1 - phi) * value
    }
  }
  return Tensor(shape: guided.shape, scalars: out)
}

private func standardDeviation(_ values: ArraySlice<Float>) -> Double {
  let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
  let squares = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
  return (squares / Double(max(1, values.count - 1))).squareRoot()
}

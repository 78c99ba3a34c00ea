// Sinusoidal timestep embedding, as diffusers' `get_timestep_embedding` (embeddings.py) computes
// it in float32: frequencies exp(−ln(maxPeriod) · i / (half − shift)), then [sin, cos] or
// [cos, sin] with `flipSinToCos`.

import Foundation

/// Embeds each timestep of `timesteps` as `dimension` sinusoids -> `[timesteps.count, dimension]`.
/// An odd `dimension` gets a final zero column, as in diffusers.
public func timestepEmbedding(
  _ timesteps: [Float], dimension: Int, flipSinToCos: Bool, downscaleFreqShift: Float,
  scale: Float = 1, maxPeriod: Float = 10_000
) -> Tensor {
  let half = dimension / 2
  // Mirrors the float32 arithmetic of the reference: exponent = −log(P) · i / (half − shift).
  let logPeriod = Float(-Foundation.log(Double(maxPeriod)))
  let frequencies = (0..<half).map { i in
    Foundation.exp(logPeriod * Float(i) / (Float(half) - downscaleFreqShift))
  }
  var out = [Float](repeating: 0, count: timesteps.count * dimension)
  for (row, t) in timesteps.enumerated() {
    for i in 0..<half {
      let argument = scale * (t * frequencies[i])
      let (sine, cosine) = (Foundation.sin(argument), Foundation.cos(argument))
      out[row * dimension + i] = flipSinToCos ? cosine : sine
      out[row * dimension + half + i] = flipSinToCos ? sine : cosine
    }
  }
  return Tensor(shape: [timesteps.count, dimension], scalars: out)
}

/// The guidance-scale embedding of full LCM checkpoints, as diffusers'
/// `LatentConsistencyModelPipeline.get_guidance_scale_embedding` computes it in float32: w·1000
/// times the frequencies exp(−i · ln(10000) / (half − 1)), then [sin, cos] -> `[w.count,
/// dimension]` (an odd `dimension` gets a final zero column).
public func guidanceScaleEmbedding(_ w: [Float], dimension: Int) -> Tensor {
  let half = dimension / 2
  // The reference's order: one float32 step ln(10000) / (half − 1), then i · −step.
  let step = Foundation.log(Float(10_000)) / Float(half - 1)
  let frequencies = (0..<half).map { i in Foundation.exp(Float(i) * -step) }
  var out = [Float](repeating: 0, count: w.count * dimension)
  for (row, scale) in w.enumerated() {
    let scaled = scale * 1000
    for i in 0..<half {
      let argument = scaled * frequencies[i]
      out[row * dimension + i] = Foundation.sin(argument)
      out[row * dimension + half + i] = Foundation.cos(argument)
    }
  }
  return Tensor(shape: [w.count, dimension], scalars: out)
}

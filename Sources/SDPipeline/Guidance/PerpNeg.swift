// Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm"): with
// d = ε − ε_∅, ε = ε_∅ + s·[d_pos − Σ wᵢ·(dᵢ − (dᵢ·d_pos / |d_pos|²)·d_pos)], per batch item, so
// only the part of each negative direction perpendicular to the positive one is removed (the
// paper's negative weight is s·wᵢ).

import SDTensor

func perpNeg(
  unconditional: Tensor, negatives: [(prediction: Tensor, weight: Float)], positive: Tensor,
  scale: Float
) -> Tensor {
  let direction = positive - unconditional
  var guided = direction
  for negative in negatives {
    let perpendicular = perpendicularPart(negative.prediction - unconditional, to: direction)
    guided.add(perpendicular * -negative.weight)
  }
  return unconditional + scale * guided
}

/// x − (x·y / |y|²)·y for each batch item (all non-batch axes flattened).
func perpendicularPart(_ x: Tensor, to y: Tensor) -> Tensor {
  let items = x.shape[0]
  let size = x.count / items
  var out = x.scalars
  for item in 0..<items {
    let range = item * size..<(item + 1) * size
    var dot = 0.0
    var norm = 0.0
    for i in range {
      dot += Double(x.scalars[i]) * Double(y.scalars[i])
      norm += Double(y.scalars[i]) * Double(y.scalars[i])
    }
    let projection = norm > 0 ? Float(dot / norm) : 0
    for i in range { out[i] = x.scalars[i] - projection * y.scalars[i] }
  }
  return Tensor(shape: x.shape, scalars: out)
}

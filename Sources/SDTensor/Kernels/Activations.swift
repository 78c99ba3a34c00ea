// Element-wise activations as PyTorch defines them: SiLU, GELU (erf and tanh forms), quick-GELU
// (CLIP's x·σ(1.702x)) and GEGLU (diffusers' GEGLU: value · gelu(gate), split on the last axis).

import Foundation

/// The activation functions the models use.
public enum Activation: Sendable, Equatable {
  /// x · σ(x) (torch.nn.SiLU).
  case silu
  /// 0.5 · x · (1 + erf(x / √2)) (torch.nn.GELU(), approximate="none").
  case gelu
  /// 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 x³))) (GELU(approximate="tanh")).
  case geluTanh
  /// x · σ(1.702 x), the activation of the original CLIP ("quick_gelu" in transformers).
  case quickGELU

  /// Parses the `hidden_act` / `act_fn` spelling of transformers and diffusers configs.
  public init?(configName: String) {
    switch configName {
    case "silu", "swish": self = .silu
    case "gelu": self = .gelu
    case "gelu_new", "gelu_pytorch_tanh", "gelu_tanh": self = .geluTanh
    case "quick_gelu": self = .quickGELU
    default: return nil
    }
  }

  @inlinable @inline(__always)
  func apply(_ x: SIMD8<Float>) -> SIMD8<Float> {
    switch self {
    case .silu: return x / (1 + vectorExp(-x))
    case .gelu: return 0.5 * x * (1 + vectorErf(x * 0.707_106_781_186_547_5))
    case .geluTanh:
      return 0.5 * x * (1 + vectorTanh(0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)))
    case .quickGELU: return x / (1 + vectorExp(-1.702 * x))
    }
  }

  /// Scalar reference form (plain libm), used by tests to check the vector form.
  public func reference(_ x: Float) -> Float {
    let d = Double(x)
    switch self {
    case .silu: return Float(d / (1 + exp(-d)))
    case .gelu: return Float(0.5 * d * (1 + erf(d / 2.0.squareRoot())))
    case .geluTanh:
      return Float(0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d))))
    case .quickGELU: return Float(d / (1 + exp(-1.702 * d)))
    }
  }
}

/// Elements per parallel chunk for element-wise kernels: large enough to amortise a dispatch.
let elementwiseGrain = 1 << 15

/// Applies `activation` to every element.
public func activate(_ x: Tensor, _ activation: Activation, options: ComputeOptions) -> Tensor {
  Tensor(shape: x.shape) { out in
    x.scalars.withUnsafeBufferPointer { src in
      guard let s = src.baseAddress, let d = out.baseAddress else { return }
      let (source, destination) = (SharedPointer(s), SharedMutablePointer(d))
      // Chunks are disjoint ranges of the output.
      parallelFor(x.count, grain: elementwiseGrain, options: options) { range in
        forEachVector(
          source.base + range.lowerBound, destination.base + range.lowerBound,
          count: range.count
        ) { activation.apply($0) }
      }
    }
  }
}

/// diffusers' GEGLU after its projection: the last axis `[..., 2f]` is split into value and gate
/// halves and the result is value · gelu(gate), `[..., f]`.
public func geglu(_ x: Tensor, options: ComputeOptions) -> Tensor {
  let width = x.shape[x.rank - 1]
  precondition(width % 2 == 0, "geglu needs an even last axis, got \(x.shape)")
  let half = width / 2
  let rows = x.count / Swift.max(1, width)
  return Tensor(shape: Array(x.shape.dropLast()) + [half]) { out in
    x.scalars.withUnsafeBufferPointer { src in
      guard let s = src.baseAddress, let d = out.baseAddress else { return }
      let (source, destination) = (SharedPointer(s), SharedMutablePointer(d))
      // Each row of the output is written by one iteration.
      parallelFor(rows, grain: Swift.max(1, elementwiseGrain / Swift.max(1, half)), options: options)
      { range in
        for row in range {
          let value = source.base + row * width
          let gate = value + half
          let result = destination.base + row * half
          var i = 0
          while i < half {
            let lanes = Swift.min(8, half - i)
            var v = SIMD8<Float>(repeating: 0)
            var g = SIMD8<Float>(repeating: 0)
            if lanes == 8 {
              v = UnsafeRawPointer(value + i).loadUnaligned(as: SIMD8<Float>.self)
              g = UnsafeRawPointer(gate + i).loadUnaligned(as: SIMD8<Float>.self)
            } else {
              for lane in 0..<lanes { (v[lane], g[lane]) = (value[i + lane], gate[i + lane]) }
            }
            let r = v * Activation.gelu.apply(g)
            if lanes == 8 {
              UnsafeMutableRawPointer(result + i).storeBytes(of: r, as: SIMD8<Float>.self)
            } else {
              for lane in 0..<lanes { result[i + lane] = r[lane] }
            }
            i += 8
          }
        }
      }
    }
  }
}

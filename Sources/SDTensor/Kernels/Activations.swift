// Element-wise activations as PyTorch defines them: SiLU, GELU (erf and tanh forms), quick-GELU
// (CLIP's x·σ(1.702x)), ReLU (TAESD's) and GEGLU (diffusers' GEGLU: value · gelu(gate), split on
// the last axis).

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
  /// max(0, x) (torch.nn.ReLU; NaN stays NaN, as in torch).
  case relu

  /// Parses the `hidden_act` / `act_fn` spelling of transformers and diffusers configs.
  public init?(configName: String) {
    switch configName {
    case "silu", "swish": self = .silu
    case "gelu": self = .gelu
    case "gelu_new", "gelu_pytorch_tanh", "gelu_tanh": self = .geluTanh
    case "quick_gelu": self = .quickGELU
    case "relu": self = .relu
    default: return nil
    }
  }

  @inlinable @inline(__always)
  func apply(_ x: Float) -> Float {
    switch self {
    case .silu: return x / (1 + fastExp(-x))
    case .gelu: return 0.5 * x * (1 + fastErf(x * 0.707_106_781_186_547_5))
    case .geluTanh:
      return 0.5 * x * (1 + fastTanh(0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)))
    case .quickGELU: return x / (1 + fastExp(-1.702 * x))
    case .relu: return x < 0 ? 0 : x
    }
  }

  /// Applies the activation to `count` floats; the switch is outside the loop so each case
  /// vectorises.
  @inline(__always)
  func apply(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    switch self {
    case .silu: transform(src, dst, count: count) { Activation.silu.apply($0) }
    case .gelu: transform(src, dst, count: count) { Activation.gelu.apply($0) }
    case .geluTanh: transform(src, dst, count: count) { Activation.geluTanh.apply($0) }
    case .quickGELU: transform(src, dst, count: count) { Activation.quickGELU.apply($0) }
    case .relu: transform(src, dst, count: count) { Activation.relu.apply($0) }
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
    case .relu: return x < 0 ? 0 : x
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
        activation.apply(
          source.base + range.lowerBound, destination.base + range.lowerBound, count: range.count)
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
      parallelFor(
        rows, grain: Swift.max(1, elementwiseGrain / Swift.max(1, half)), options: options
      ) { range in
        for row in range {
          let value = source.base + row * width
          let gate = value + half
          let result = destination.base + row * half
          for i in 0..<half { result[i] = value[i] * Activation.gelu.apply(gate[i]) }
        }
      }
    }
  }
}

// A model weight as the layers hold it: Float32, or IEEE half precision kept as its 16-bit
// pattern (half the memory) and widened to Float32 each time a layer uses it.

/// A weight tensor in Float32 or half-precision storage.
public struct Weight: Sendable {
  enum Storage: Sendable {
    case float(Tensor)
    case half([UInt16])
    /// F16 data used where it lies in a checkpoint's file mapping (see `MappedHalfBits`).
    case mappedHalf(MappedHalfBits)
  }

  public let shape: [Int]
  let storage: Storage

  /// A Float32 weight.
  public init(_ tensor: Tensor) {
    shape = tensor.shape
    storage = .float(tensor)
  }

  /// A half-precision weight from its bit patterns (`shape.reduce(1, *)` of them).
  public init(shape: [Int], halfBits: [UInt16]) {
    precondition(
      halfBits.count == shape.reduce(1, *), "\(halfBits.count) half values for shape \(shape)")
    self.shape = shape
    storage = .half(halfBits)
  }

  /// A half-precision weight read in place from a file mapping.
  init(shape: [Int], mapped bits: MappedHalfBits) {
    self.shape = shape
    storage = .mappedHalf(bits)
  }

  /// Whether the weight is stored in half precision.
  public var isHalfPrecision: Bool {
    if case .float = storage { return false }
    return true
  }

  /// Whether the weight's values are read in place from the checkpoint file's mapping rather
  /// than copied into memory of the process's own.
  public var isFileBacked: Bool {
    if case .mappedHalf = storage { return true }
    return false
  }

  /// Bytes the weight occupies (for a file-backed weight: when all of its pages are resident).
  public var byteCount: Int {
    switch storage {
    case .float(let tensor): return tensor.count * 4
    case .half(let bits): return bits.count * 2
    case .mappedHalf: return shape.reduce(1, *) * 2
    }
  }

  /// The weight as Float32: the stored tensor, or a widened copy of the half-precision values.
  public func float(options: ComputeOptions) -> Tensor {
    switch storage {
    case .float(let tensor): return tensor
    case .half(let bits):
      return bits.withUnsafeBufferPointer { source in
        guard let base = source.baseAddress else { return Tensor(zeros: shape) }
        return widened(base, options: options)
      }
    case .mappedHalf(let bits): return widened(bits.base, options: options)
    }
  }

  /// Elements `range` of the weight (row-major order) as Float32, without widening the rest: a
  /// lookup such as one token's embedding row.
  public func scalars(_ range: Range<Int>) -> [Float] {
    precondition(
      range.lowerBound >= 0 && range.upperBound <= shape.reduce(1, *),
      "elements \(range) of a weight of shape \(shape)")
    switch storage {
    case .float(let tensor): return Array(tensor.scalars[range])
    case .half(let bits): return bits[range].map { Float(Float16(bitPattern: $0)) }
    case .mappedHalf(let bits):
      return range.map { Float(Float16(bitPattern: bits.base[$0])) }
    }
  }

  private func widened(_ bits: UnsafePointer<UInt16>, options: ComputeOptions) -> Tensor {
    let count = shape.reduce(1, *)
    return Tensor(shape: shape) { out in
      guard let output = out.baseAddress else { return }
      let (from, to) = (SharedHalfPointer(bits), SharedMutablePointer(output))
      // Each chunk widens its own range.
      parallelFor(count, grain: 1 << 16, options: options) { range in
        widenHalf(
          from.base + range.lowerBound, into: to.base + range.lowerBound, count: range.count)
      }
    }
  }
}

/// Half-precision bits inside a safetensors file's read-only mapping, which `file` keeps alive.
/// Shared between threads only for reading; the mapping never changes while the file is open.
struct MappedHalfBits: @unchecked Sendable {
  let base: UnsafePointer<UInt16>
  let file: SafeTensorsFile
}

/// Read-only half-precision bits shared by the iterations of `parallelFor`.
struct SharedHalfPointer: @unchecked Sendable {
  let base: UnsafePointer<UInt16>
  init(_ base: UnsafePointer<UInt16>) { self.base = base }
}

/// IEEE binary16 → binary32 without branches, so the loop vectorises: the 15 magnitude bits
/// shifted into place read as a float whose exponent is 112 too small (normal and subnormal
/// halves alike), so one multiply by 2¹¹² corrects it; infinities and NaNs (exponent 31) get
/// the float exponent 255; the sign is copied.
func widenHalf(_ input: UnsafePointer<UInt16>, into output: UnsafeMutablePointer<Float>, count: Int)
{
  let scale = Float(bitPattern: (127 + 112) << 23)
  for i in 0..<count {
    let bits = UInt32(input[i])
    let magnitude = (bits & 0x7FFF) << 13
    let widened = Float(bitPattern: magnitude) * scale
    let special = Float(bitPattern: magnitude | 0x7F80_0000)
    let value = bits & 0x7C00 == 0x7C00 ? special : widened
    output[i] = Float(bitPattern: value.bitPattern | ((bits & 0x8000) << 16))
  }
}

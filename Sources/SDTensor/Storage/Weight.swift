// A model weight as the layers hold it: Float32, or IEEE half precision kept as its 16-bit
// pattern (half the memory) and widened to Float32 each time a layer uses it; either one copied
// into the process's memory or used where it lies in the checkpoint file's mapping.

/// A weight tensor in Float32 or half-precision storage.
public struct Weight: Sendable {
  enum Storage: Sendable {
    case float(Tensor)
    case half([UInt16])
    /// F32 data used where it lies in a checkpoint's file mapping.
    case mappedFloat(FileBackedPointer<Float>)
    /// F16 data used where it lies in a checkpoint's file mapping.
    case mappedHalf(FileBackedPointer<UInt16>)
  }

  /// The extents, outermost first, as stored in the checkpoint (Linear `[out, in]`, Conv `[out,
  /// in, kh, kw]`).
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

  /// A weight with the given storage (the store makes file-backed ones this way).
  init(shape: [Int], storage: Storage) {
    self.shape = shape
    self.storage = storage
  }

  /// The same values with another shape of as many elements, storage shared (a 1×1
  /// convolution's `[out, in, 1, 1]` weight read as a linear layer's `[out, in]`).
  public func reshaped(_ newShape: [Int]) -> Weight {
    precondition(
      newShape.reduce(1, *) == elementCount, "cannot view weight \(shape) as \(newShape)")
    return Weight(shape: newShape, storage: storage)
  }

  /// Whether the weight is stored in half precision.
  public var isHalfPrecision: Bool {
    switch storage {
    case .float, .mappedFloat: return false
    case .half, .mappedHalf: return true
    }
  }

  /// Whether the weight's values are read in place from the checkpoint file's mapping rather
  /// than copied into memory of the process's own.
  public var isFileBacked: Bool {
    switch storage {
    case .float, .half: return false
    case .mappedFloat, .mappedHalf: return true
    }
  }

  /// Bytes the weight occupies (for a file-backed weight: when all of its pages are resident).
  public var byteCount: Int { elementCount * (isHalfPrecision ? 2 : 4) }

  private var elementCount: Int { shape.reduce(1, *) }

  /// The weight as a Float32 tensor: the stored tensor, or a copy (widened from half precision,
  /// or out of the file mapping). The kernels read it through `withFloats`, without the copy.
  public func float(options: ComputeOptions) -> Tensor {
    if case .float(let tensor) = storage { return tensor }
    return withFloats(options: options) { values in
      Tensor(shape: shape, scalars: Array(UnsafeBufferPointer(start: values, count: elementCount)))
    }
  }

  /// Calls `body` with the weight's Float32 values (row-major): the stored values in place for
  /// Float32 storage, in memory or in the file mapping; a widened temporary for half precision.
  /// The pointer is valid only inside `body`; internal, since no public API hands out pointers.
  func withFloats<Result>(
    options: ComputeOptions, _ body: (UnsafePointer<Float>) -> Result
  ) -> Result {
    switch storage {
    case .float(let tensor): return tensor.withFloats(body)
    case .mappedFloat(let values): return body(values.base)
    case .half(let bits):
      let widened = bits.withUnsafeBufferPointer { source in
        source.baseAddress.map { widen($0, options: options) } ?? Tensor(zeros: shape)
      }
      return widened.withFloats(body)
    case .mappedHalf(let bits): return widen(bits.base, options: options).withFloats(body)
    }
  }

  /// Elements `range` of the weight (row-major order) as Float32, without widening the rest: a
  /// lookup such as one token's embedding row.
  public func scalars(_ range: Range<Int>) -> [Float] {
    precondition(
      range.lowerBound >= 0 && range.upperBound <= elementCount,
      "elements \(range) of a weight of shape \(shape)")
    switch storage {
    case .float(let tensor): return Array(tensor.scalars[range])
    case .half(let bits): return bits[range].map { Float(Float16(bitPattern: $0)) }
    case .mappedFloat(let values): return range.map { values.base[$0] }
    case .mappedHalf(let bits): return range.map { Float(Float16(bitPattern: bits.base[$0])) }
    }
  }

  private func widen(_ bits: UnsafePointer<UInt16>, options: ComputeOptions) -> Tensor {
    let count = elementCount
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

extension Tensor {
  /// `body` with a pointer to the elements (a valid pointer even when there are none).
  fileprivate func withFloats<Result>(_ body: (UnsafePointer<Float>) -> Result) -> Result {
    scalars.withUnsafeBufferPointer { buffer in
      guard let base = buffer.baseAddress else {
        var none: Float = 0
        return body(&none)
      }
      return body(base)
    }
  }
}

/// Data inside a safetensors file's read-only mapping, which `file` keeps alive. Shared between
/// threads only for reading; the mapping never changes while the file is open.
struct FileBackedPointer<Element>: @unchecked Sendable {
  let base: UnsafePointer<Element>
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

// The tensor value every layer computes on: a shape and contiguous row-major Float32 storage.
// No strides and no views: reshape is free, anything that moves data (permute) is an explicit copy.

/// A dense, row-major Float32 tensor with value semantics (copy-on-write storage).
///
/// Layouts used across the package: images and latents are NCHW, token sequences are
/// `[batch, tokens, channels]`, weights keep the layout of the checkpoint they came from.
public struct Tensor: Sendable, Equatable {
  /// The extent of each axis, outermost first.
  public private(set) var shape: [Int]
  /// The elements in row-major order; `scalars.count == shape.reduce(1, *)`.
  public var scalars: [Float]

  /// A tensor with the given shape and elements (row-major).
  public init(shape: [Int], scalars: [Float]) {
    precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
    precondition(
      shape.reduce(1, *) == scalars.count,
      "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(scalars.count)")
    self.shape = shape
    self.scalars = scalars
  }

  /// A tensor of the given shape with every element equal to `value`.
  public init(repeating value: Float, shape: [Int]) {
    self.init(shape: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
  }

  /// A tensor of zeros.
  public init(zeros shape: [Int]) { self.init(repeating: 0, shape: shape) }

  /// Builds a tensor by letting `body` fill uninitialized storage of `shape.reduce(1, *)` elements.
  /// Every element must be written; used by kernels to avoid zero-filling output they overwrite.
  public init(
    shape: [Int], unsafeUninitializedScalars body: (inout UnsafeMutableBufferPointer<Float>) -> Void
  ) {
    let count = shape.reduce(1, *)
    self.shape = shape
    self.scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
      body(&buffer)
      initialized = count
    }
  }

  /// Number of elements.
  public var count: Int { scalars.count }
  /// Number of axes.
  public var rank: Int { shape.count }

  /// The same elements under a new shape with the same element count; one extent may be -1.
  public func reshaped(_ newShape: [Int]) -> Tensor {
    var resolved = newShape
    if let inferred = newShape.firstIndex(of: -1) {
      let known = newShape.enumerated().filter { $0.offset != inferred }.map(\.element)
        .reduce(1, *)
      precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
      resolved[inferred] = count / known
    }
    return Tensor(shape: resolved, scalars: scalars)
  }

  /// A copy with the axes reordered: result axis `i` is axis `axes[i]` of `self`.
  public func permuted(_ axes: [Int]) -> Tensor {
    precondition(axes.sorted() == Array(0..<rank), "permutation \(axes) for shape \(shape)")
    if axes == Array(0..<rank) { return self }
    let outShape = axes.map { shape[$0] }
    let inStrides = Tensor.strides(of: shape)
    let strideOfOut = axes.map { inStrides[$0] }
    let rank = self.rank
    return Tensor(shape: outShape) { out in
      scalars.withUnsafeBufferPointer { src in
        // Walk the output in order with an odometer over its index; the innermost axis is a
        // strided copy.
        var index = [Int](repeating: 0, count: rank)
        var source = 0
        let inner = outShape[rank - 1]
        let innerStride = strideOfOut[rank - 1]
        var o = 0
        while o < out.count {
          var s = source
          for _ in 0..<inner {
            out[o] = src[s]
            o += 1
            s += innerStride
          }
          var axis = rank - 2
          while axis >= 0 {
            index[axis] += 1
            source += strideOfOut[axis]
            if index[axis] < outShape[axis] { break }
            source -= strideOfOut[axis] * outShape[axis]
            index[axis] = 0
            axis -= 1
          }
        }
      }
    }
  }

  /// A copy with the last two axes swapped, in cache-sized blocks (the transformer blocks swap
  /// NCHW and token layouts twice per layer).
  public func transposedLastTwo() -> Tensor {
    precondition(rank >= 2, "transpose needs rank >= 2, got \(shape)")
    let (rows, columns) = (shape[rank - 2], shape[rank - 1])
    let matrices = count / Swift.max(1, rows * columns)
    var outShape = shape
    outShape.swapAt(rank - 1, rank - 2)
    let block = 32
    return Tensor(shape: outShape) { out in
      scalars.withUnsafeBufferPointer { src in
        guard let s = src.baseAddress, let d = out.baseAddress else { return }
        for matrix in 0..<matrices {
          let input = s + matrix * rows * columns
          let output = d + matrix * rows * columns
          for r0 in stride(from: 0, to: rows, by: block) {
            for c0 in stride(from: 0, to: columns, by: block) {
              for r in r0..<Swift.min(rows, r0 + block) {
                for c in c0..<Swift.min(columns, c0 + block) {
                  output[c * rows + r] = input[r * columns + c]
                }
              }
            }
          }
        }
      }
    }
  }

  /// Row-major strides of a shape, in elements.
  public static func strides(of shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var running = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
      strides[axis] = running
      running *= shape[axis]
    }
    return strides
  }

  /// The largest absolute value of any element (0 for an empty tensor).
  public var maxAbs: Float { scalars.reduce(0) { Swift.max($0, Swift.abs($1)) } }
}

extension Tensor: CustomStringConvertible {
  /// `Tensor([shape], [first six values, ...])`, for debugging.
  public var description: String {
    let preview = scalars.prefix(6).map { String($0) }.joined(separator: ", ")
    return "Tensor(\(shape), [\(preview)\(count > 6 ? ", ..." : "")])"
  }
}

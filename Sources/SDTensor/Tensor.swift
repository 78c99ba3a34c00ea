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

  /// A copy with the last two axes swapped (the transformer blocks swap NCHW and token layouts
  /// twice per layer), 8×8 tiles at a time transposed in registers, tile rows split over
  /// `options.threadCount` threads. Element by element in 32×32 blocks, [2, 4096, 320] took 12 ms:
  /// its 32 writes per column block lay 16 KB apart, all in one L1 set.
  public func transposedLastTwo(options: ComputeOptions = ComputeOptions()) -> Tensor {
    precondition(rank >= 2, "transpose needs rank >= 2, got \(shape)")
    let (rows, columns) = (shape[rank - 2], shape[rank - 1])
    let matrices = count / Swift.max(1, rows * columns)
    var outShape = shape
    outShape.swapAt(rank - 1, rank - 2)
    let tileRows = (rows + 7) / 8
    return Tensor(shape: outShape) { out in
      scalars.withUnsafeBufferPointer { src in
        guard let s = src.baseAddress, let d = out.baseAddress else { return }
        let (source, destination) = (SharedPointer(s), SharedMutablePointer(d))
        // Each task writes the output columns of its own eight input rows.
        parallelFor(
          matrices * tileRows, grain: Swift.max(1, 4096 / Swift.max(1, columns)), options: options
        ) { tasks in
          for task in tasks {
            let (matrix, r0) = (task / tileRows, task % tileRows * 8)
            let input = source.base + matrix * rows * columns
            let output = destination.base + matrix * rows * columns
            var c0 = 0
            if r0 + 8 <= rows {
              while c0 + 8 <= columns {
                transpose8x8(input + r0 * columns + c0, columns, output + c0 * rows + r0, rows)
                c0 += 8
              }
            }
            for r in r0..<Swift.min(rows, r0 + 8) {
              for c in c0..<columns { output[c * rows + r] = input[r * columns + c] }
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

/// Writes the transpose of the 8×8 tile at `input` (rows `inputStride` apart) to `output` (rows
/// `outputStride` apart). Three rounds of even/odd splits of row pairs: each moves the lowest
/// column bit of an element's position to the top of its row bits, so after three the row and
/// column bits have traded places.
@inline(__always) func transpose8x8(
  _ input: UnsafePointer<Float>, _ inputStride: Int, _ output: UnsafeMutablePointer<Float>,
  _ outputStride: Int
) {
  @inline(__always) func split(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> (
    SIMD8<Float>, SIMD8<Float>
  ) {
    let pair = SIMD16(lowHalf: a, highHalf: b)
    return (pair.evenHalf, pair.oddHalf)
  }
  var r = (
    load8(input), load8(input + inputStride), load8(input + 2 * inputStride),
    load8(input + 3 * inputStride), load8(input + 4 * inputStride),
    load8(input + 5 * inputStride), load8(input + 6 * inputStride),
    load8(input + 7 * inputStride)
  )
  for _ in 0..<3 {
    let (e0, o0) = split(r.0, r.1)
    let (e1, o1) = split(r.2, r.3)
    let (e2, o2) = split(r.4, r.5)
    let (e3, o3) = split(r.6, r.7)
    r = (e0, e1, e2, e3, o0, o1, o2, o3)
  }
  store8(r.0, output)
  store8(r.1, output + outputStride)
  store8(r.2, output + 2 * outputStride)
  store8(r.3, output + 3 * outputStride)
  store8(r.4, output + 4 * outputStride)
  store8(r.5, output + 5 * outputStride)
  store8(r.6, output + 6 * outputStride)
  store8(r.7, output + 7 * outputStride)
}

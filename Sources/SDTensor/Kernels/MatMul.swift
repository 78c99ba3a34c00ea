// Matrix products over cblas_sgemm: the single place the package calls BLAS for a GEMM.
// Legend: m, n, k are the GEMM sizes (C[m, n] = A[m, k] · B[k, n]); lda/ldb/ldc row strides.

import CBLAS

/// C = alpha · op(A) · op(B) + beta · C on row-major pointers; the only call of `cblas_sgemm`.
@inlinable
func sgemm(
  transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
  c: UnsafeMutablePointer<Float>, ldc: Int
) {
  guard m > 0, n > 0 else { return }
  if k == 0 {
    // BLAS leaves C untouched for k = 0 only when beta = 1; make the empty product explicit.
    for row in 0..<m { for col in 0..<n { c[row * ldc + col] *= beta } }
    return
  }
  cblas_sgemm(
    CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Matrix product of the last two axes, batched over the leading axes (which must agree, or `b`
/// may be 2-D and is then shared by every batch item).
/// `a`: `[..., m, k]` (or `[..., k, m]` with `transposeA`), `b`: `[..., k, n]` (or `[..., n, k]`
/// with `transposeB`) -> `[..., m, n]`.
public func matmul(
  _ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false, alpha: Float = 1
) -> Tensor {
  precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank >= 2: \(a.shape) x \(b.shape)")
  let batchShape = Array(a.shape.dropLast(2))
  let sharedB = b.rank == 2
  precondition(
    sharedB || Array(b.shape.dropLast(2)) == batchShape,
    "matmul batch axes differ: \(a.shape) x \(b.shape)")
  let (m, k) =
    transposeA ? (a.shape[a.rank - 1], a.shape[a.rank - 2]) : (a.shape[a.rank - 2], a.shape[a.rank - 1])
  let (kb, n) =
    transposeB ? (b.shape[b.rank - 1], b.shape[b.rank - 2]) : (b.shape[b.rank - 2], b.shape[b.rank - 1])
  precondition(k == kb, "matmul inner sizes differ: \(a.shape) x \(b.shape) (transposeA \(transposeA), transposeB \(transposeB))")
  let batch = batchShape.reduce(1, *)
  return Tensor(shape: batchShape + [m, n]) { out in
    a.scalars.withUnsafeBufferPointer { pa in
      b.scalars.withUnsafeBufferPointer { pb in
        guard let aBase = pa.baseAddress, let bBase = pb.baseAddress, let cBase = out.baseAddress
        else { out.initialize(repeating: 0); return }
        for item in 0..<batch {
          sgemm(
            transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
            a: aBase + item * m * k, lda: transposeA ? m : k,
            b: bBase + (sharedB ? 0 : item * k * n), ldb: transposeB ? k : n,
            c: cBase + item * m * n, ldc: n)
        }
      }
    }
  }
}

/// A fully connected layer over the last axis: `[..., in]` · weightᵀ + bias -> `[..., out]`.
/// `weight` is `[out, in]` as PyTorch stores it, so it is used transposed without a copy.
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
  let inFeatures = x.shape[x.rank - 1]
  precondition(
    weight.rank == 2 && weight.shape[1] == inFeatures,
    "linear: input \(x.shape) does not fit weight \(weight.shape)")
  let outFeatures = weight.shape[0]
  let rows = x.count / Swift.max(1, inFeatures)
  return Tensor(shape: Array(x.shape.dropLast()) + [outFeatures]) { out in
    guard let cBase = out.baseAddress else { return }
    var beta: Float = 0
    if let bias {
      precondition(bias.shape == [outFeatures], "linear bias \(bias.shape) for \(outFeatures) outputs")
      bias.scalars.withUnsafeBufferPointer { pb in
        for row in 0..<rows {
          _ = UnsafeMutableBufferPointer(start: cBase + row * outFeatures, count: outFeatures)
            .update(fromContentsOf: pb)
        }
      }
      beta = 1
    }
    x.scalars.withUnsafeBufferPointer { px in
      weight.scalars.withUnsafeBufferPointer { pw in
        guard let xBase = px.baseAddress, let wBase = pw.baseAddress else {
          if beta == 0 { out.initialize(repeating: 0) }
          return
        }
        sgemm(
          transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures,
          a: xBase, lda: inFeatures, b: wBase, ldb: inFeatures, beta: beta, c: cBase,
          ldc: outFeatures)
      }
    }
  }
}

/// Plain-loop reference for `matmul` on 2-D operands (tests compare the two).
public func referenceMatmul(_ a: Tensor, _ b: Tensor) -> Tensor {
  let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
  var out = [Float](repeating: 0, count: m * n)
  for i in 0..<m {
    for j in 0..<n {
      var sum: Double = 0
      for p in 0..<k { sum += Double(a.scalars[i * k + p]) * Double(b.scalars[p * n + j]) }
      out[i * n + j] = Float(sum)
    }
  }
  return Tensor(shape: [m, n], scalars: out)
}

// Matrix products: the single place the package multiplies matrices. Builds for AVX2 or AVX-512
// (the default, see Package.swift) run our own GEMM (GEMM.swift); other builds call cblas_sgemm.
// Legend: m, n, k are the GEMM sizes (C[m, n] = A[m, k] · B[k, n]); lda/ldb/ldc row strides.

import CBLAS

/// C = alpha · op(A) · op(B) + beta · C (+ `bias`, n values added to every row) on row-major
/// pointers, on the calling thread. With `beta == 0`, C is only written.
func sgemm(
  transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
  c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>? = nil
) {
  guard m > 0, n > 0 else { return }
  if k == 0 {
    // The empty product: C = beta · C plus the bias.
    scaleAddingBias(c, m: m, n: n, ldc: ldc, beta: beta, bias: bias)
    return
  }
  #if SD_AVX512 || SD_AVX2
    gemm(
      transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a,
      lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, bias: bias)
  #else
    _ = blasPinnedToOneThread
    var beta = beta
    if bias != nil {
      // cblas has no bias: it goes into C first, added by β = 1 (the same single rounding).
      scaleAddingBias(c, m: m, n: n, ldc: ldc, beta: beta, bias: bias)
      beta = 1
    }
    cblas_sgemm(
      CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  #endif
}

/// C = beta · C + bias, row by row (C is not read when beta is 0; without a bias, beta · C).
private func scaleAddingBias(
  _ c: UnsafeMutablePointer<Float>, m: Int, n: Int, ldc: Int, beta: Float,
  bias: UnsafePointer<Float>?
) {
  for row in 0..<m {
    for col in 0..<n {
      let value = beta == 0 ? 0 : c[row * ldc + col] * beta
      c[row * ldc + col] = bias.map { value + $0[col] } ?? value
    }
  }
}

#if !(SD_AVX512 || SD_AVX2)
  /// Portable builds call OpenBLAS, whose results depend on its own thread count (it splits and
  /// rounds differently). The first product pins it to one thread, process-wide, before any call;
  /// our kernels split the work over their own threads instead, so results are the same bytes for
  /// any thread count. Swift runs a global's initialiser once, thread-safely.
  private let blasPinnedToOneThread: Void = {
    #if !canImport(Accelerate)
      openblas_set_num_threads(1)
    #endif
  }()
#endif

/// Products of at least this many multiply-adds are cut into parts for our threads.
private let splitWork = 1 << 24

/// `sgemm` cut into parts along the longer of m and n, run on our threads. Part boundaries depend
/// only on the sizes, and each output element is computed as in one whole product, so results do
/// not depend on the thread count.
func sgemm(
  transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
  c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>? = nil,
  options: ComputeOptions
) {
  guard m * n * k >= splitWork else {
    sgemm(
      transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
      a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, bias: bias)
    return
  }
  let alongRows = m >= n
  #if SD_AVX512 || SD_AVX2
    if alongRows && gemmPacksBOnce(n: n, k: k) {
      gemmRowsInParallel(
        transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a,
        lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, bias: bias, options: options)
      return
    }
  #endif
  let biasBase = bias.map(SharedPointer.init)
  let length = alongRows ? m : n
  // Enough parts to balance 2–4 threads, each still a large GEMM.
  let parts = length >= 1024 ? 8 : length >= 512 ? 4 : 2
  let size = ((length + parts - 1) / parts + 7) / 8 * 8
  let (pa, pb, pc) = (SharedPointer(a), SharedPointer(b), SharedMutablePointer(c))
  // Each part writes its own rows (or columns) of C.
  parallelFor((length + size - 1) / size, grain: 1, options: options) { range in
    for part in range {
      let start = part * size
      let count = Swift.min(size, length - start)
      if alongRows {
        sgemm(
          transposeA: transposeA, transposeB: transposeB, m: count, n: n, k: k, alpha: alpha,
          a: pa.base + (transposeA ? start : start * lda), lda: lda, b: pb.base, ldb: ldb,
          beta: beta,
          c: pc.base + start * ldc, ldc: ldc, bias: biasBase?.base)
      } else {
        sgemm(
          transposeA: transposeA, transposeB: transposeB, m: m, n: count, k: k, alpha: alpha,
          a: pa.base, lda: lda, b: pb.base + (transposeB ? start * ldb : start), ldb: ldb,
          beta: beta,
          c: pc.base + start, ldc: ldc, bias: biasBase.map { $0.base + start })
      }
    }
  }
}

/// Matrix product of the last two axes, batched over the leading axes (which must agree, or `b`
/// may be 2-D and is then shared by every batch item).
/// `a`: `[..., m, k]` (or `[..., k, m]` with `transposeA`), `b`: `[..., k, n]` (or `[..., n, k]`
/// with `transposeB`) -> `[..., m, n]`.
public func matmul(
  _ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false, alpha: Float = 1,
  options: ComputeOptions = ComputeOptions()
) -> Tensor {
  precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank >= 2: \(a.shape) x \(b.shape)")
  let batchShape = Array(a.shape.dropLast(2))
  let sharedB = b.rank == 2
  precondition(
    sharedB || Array(b.shape.dropLast(2)) == batchShape,
    "matmul batch axes differ: \(a.shape) x \(b.shape)")
  let (m, k) =
    transposeA
    ? (a.shape[a.rank - 1], a.shape[a.rank - 2]) : (a.shape[a.rank - 2], a.shape[a.rank - 1])
  let (kb, n) =
    transposeB
    ? (b.shape[b.rank - 1], b.shape[b.rank - 2]) : (b.shape[b.rank - 2], b.shape[b.rank - 1])
  precondition(
    k == kb,
    "matmul inner sizes differ: \(a.shape) x \(b.shape) (transposeA \(transposeA), transposeB \(transposeB))"
  )
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
            c: cBase + item * m * n, ldc: n, options: options)
        }
      }
    }
  }
}

/// A fully connected layer over the last axis: `[..., in]` · weightᵀ + bias -> `[..., out]`.
/// `weight` is `[out, in]` as PyTorch stores it, so it is used transposed without a copy.
public func linear(
  _ x: Tensor, weight: Tensor, bias: Tensor?, options: ComputeOptions = ComputeOptions()
) -> Tensor {
  linear(x, weight: Weight(weight), bias: bias, options: options)
}

/// `linear` with a layer weight: Float32 values are used where they are (in memory or in the
/// checkpoint's file mapping), half-precision ones widened once for the call.
public func linear(
  _ x: Tensor, weight: Weight, bias: Tensor?, options: ComputeOptions = ComputeOptions()
) -> Tensor {
  let inFeatures = x.shape[x.rank - 1]
  precondition(
    weight.shape.count == 2 && weight.shape[1] == inFeatures,
    "linear: input \(x.shape) does not fit weight \(weight.shape)")
  let outFeatures = weight.shape[0]
  // From the leading axes, not x.count / inFeatures: with no inputs the rows still get the bias.
  let rows = x.shape.dropLast().reduce(1, *)
  if let bias {
    precondition(
      bias.shape == [outFeatures], "linear bias \(bias.shape) for \(outFeatures) outputs")
  }
  return Tensor(shape: Array(x.shape.dropLast()) + [outFeatures]) { out in
    guard let cBase = out.baseAddress else { return }
    x.scalars.withUnsafeBufferPointer { px in
      weight.withFloats(options: options) { wBase in
        withBias(bias) { biasBase in
          // An empty x has no storage; then k = 0, and sgemm writes the bias without reading A.
          sgemm(
            transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures,
            a: px.baseAddress ?? UnsafePointer(cBase), lda: inFeatures, b: wBase, ldb: inFeatures,
            c: cBase, ldc: outFeatures, bias: biasBase, options: options)
        }
      }
    }
  }
}

/// Calls `body` with a pointer to the bias's values, or nil.
private func withBias<Result>(
  _ bias: Tensor?, _ body: (UnsafePointer<Float>?) -> Result
) -> Result {
  guard let bias else { return body(nil) }
  return bias.scalars.withUnsafeBufferPointer { body($0.baseAddress) }
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

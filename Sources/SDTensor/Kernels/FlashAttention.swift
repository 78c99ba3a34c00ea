// Fused attention for builds with our GEMM (FlashAttention's online softmax, Dao et al. 2022, on
// the CPU): for a block of queries, keys are visited a block at a time; the block's scores are
// made by the GEMM register tile, turned into probabilities with a running maximum and sum,
// and multiplied into the output block at once, so the tq × tk score matrix is never stored.
// Everything is computed transposed, with queries along the vector lanes: Sᵀ = K·Qᵀ for a
// block, then Oᵀ += Vᵀ·Pᵀ. The running maximum and sum are then lane-wise per query (no
// horizontal reductions), and Pᵀ is already in the layout the tile reads its B operand in.
// Legend: b batch, tq/tk query/key tokens, d head size; mr × nr the GEMM tile (nr queries a
// block), kb keys a block.

#if SD_AVX512 || SD_AVX2

  /// Keys per block. The same on every ISA (a multiple of both tiles' mr): the block boundaries
  /// decide where the online softmax rescales, so they decide the bits. Measured on
  /// 2×8×4096×40: 72 keys 0.199 s, 144 0.180 s, 288 0.179 s (per-block bookkeeping halves;
  /// beyond, the Sᵀ block leaves L1).
  private let keysPerBlock = 144

  /// softmax(Q·Kᵀ·scale)·V for one head of one batch item, queries `q0..<q0+count` (at most nr),
  /// heads side by side in rows of `channels` floats; `causal` masks key j > query i.
  /// `scratch` holds at least `flashScratchCount(d:)` floats.
  func flashAttentionBlock(
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    output: UnsafeMutablePointer<Float>, channels: Int, d: Int, keys tk: Int, q0: Int, count: Int,
    scale: Float, causal: Bool, scratch: UnsafeMutablePointer<Float>
  ) {
    let (mr, nr) = (gemmTileRows, gemmTileColumns)
    let paddedD = (d + mr - 1) / mr * mr
    // Scratch: Qᵀ [d][nr], Sᵀ/Pᵀ [kb][nr], Oᵀ [d rounded up to mr][nr], an edge tile
    // [mr][max(d, kb)], the running maximum, sum and correction [nr] each.
    let queriesT = scratch
    let scores = queriesT + d * nr
    let outT = scores + keysPerBlock * nr
    let edge = outT + paddedD * nr
    let maxima = edge + mr * Swift.max(d, keysPerBlock)
    let sums = maxima + nr
    let corrections = sums + nr

    // Qᵀ: column c is query q0 + c; missing queries are zero columns (their results are dropped).
    for p in 0..<d {
      for c in 0..<nr { queriesT[p * nr + c] = c < count ? query[(q0 + c) * channels + p] : 0 }
    }
    outT.update(repeating: 0, count: paddedD * nr)
    maxima.update(repeating: -.infinity, count: nr)
    sums.update(repeating: 0, count: nr)
    // With the causal mask the last query of the block sees keys 0...q0 + count − 1.
    let keyEnd = causal ? Swift.min(tk, q0 + count) : tk
    for k0 in stride(from: 0, to: keyEnd, by: keysPerBlock) {
      let kc = Swift.min(keysPerBlock, keyEnd - k0)
      // Sᵀ[r][c] = scale · K[k0 + r] · Q[q0 + c], mr key rows per tile, read where they lie.
      for tile in stride(from: 0, to: kc, by: mr) {
        let rows = Swift.min(mr, kc - tile)
        var a = key + (k0 + tile) * channels
        var rowStride = channels
        if rows < mr {
          // The last key rows, zero-padded to a whole tile (the padding rows are never used).
          for r in 0..<mr {
            for p in 0..<d { edge[r * d + p] = r < rows ? a[r * channels + p] : 0 }
          }
          (a, rowStride) = (UnsafePointer(edge), d)
        }
        gemmMicroKernel(
          depth: d, a: a, rowStride: rowStride, depthStride: 1, b: queriesT,
          c: scores + tile * nr, ldc: nr, alpha: scale, beta: 0)
      }
      if causal {
        for r in 0..<kc where k0 + r > q0 {
          let row = scores + r * nr
          for c in 0..<nr where k0 + r > q0 + c { row[c] = -.infinity }
        }
      }
      // The online softmax, lane-wise per query: the new maximum, the factor that moves what
      // was accumulated so far onto it, and the block's probabilities and their sums. Plain
      // loops over the contiguous block, which LLVM vectorises.
      for c in 0..<nr { corrections[c] = maxima[c] }
      for r in 0..<kc {
        let row = scores + r * nr
        for c in 0..<nr { maxima[c] = Swift.max(maxima[c], row[c]) }
      }
      for c in 0..<nr {
        corrections[c] = softmaxExp(corrections[c] - maxima[c])
        sums[c] *= corrections[c]
      }
      for j in 0..<d {
        let row = outT + j * nr
        for c in 0..<nr { row[c] *= corrections[c] }
      }
      for r in 0..<kc {
        let row = scores + r * nr
        for c in 0..<nr { row[c] = softmaxExp(row[c] - maxima[c]) }
        for c in 0..<nr { sums[c] += row[c] }
      }
      // Oᵀ[j][c] += Σ_r V[k0 + r][j] · Pᵀ[r][c]: Vᵀ is V read with its strides swapped, mr
      // dimensions per tile. The dimensions past the last whole tile (d = 40: 36..<40) are
      // copied into a zero-padded tile instead: reading them in place would read past d (the
      // next head's, or past the end of the tensor).
      for tile in stride(from: 0, to: paddedD, by: mr) {
        var a = value + k0 * channels + tile
        var (rowStride, depthStride) = (1, channels)
        if tile + mr > d {
          for r in 0..<mr {
            for p in 0..<kc { edge[r * kc + p] = tile + r < d ? a[p * channels + r] : 0 }
          }
          (a, rowStride, depthStride) = (UnsafePointer(edge), kc, 1)
        }
        gemmMicroKernel(
          depth: kc, a: a, rowStride: rowStride, depthStride: depthStride, b: scores,
          c: outT + tile * nr, ldc: nr, alpha: 1, beta: 1)
      }
    }
    for c in 0..<count {
      let inverse = 1 / sums[c]
      let row = output + (q0 + c) * channels
      for j in 0..<d { row[j] = outT[j * nr + c] * inverse }
    }
  }

  /// e^x for the softmax's x ≤ 0 (a score minus its running maximum; −∞ for masked keys): the
  /// Cody–Waite reduction and Cephes polynomial of `fastExp`, evaluated with FMAs, and without
  /// its upper clamp and its exact 0 below −87.3 (which returns e^−87.3 ≈ 1e-38 instead): 14
  /// vector operations instead of 26, and the exp is the softmax's whole cost. Relative error
  /// below 2e-7 for x in [−87.3, 0].
  @inline(__always)
  private func softmaxExp(_ value: Float) -> Float {
    let x = Swift.max(value, -87.3)
    let shifted = roundingMagic.addingProduct(x, 1.442_695_04)
    let n = shifted - roundingMagic
    var r = x.addingProduct(n, -0.693_359_375)
    r = r.addingProduct(n, 2.121_944_4e-4)
    var p = Float(1.398_199_95e-3).addingProduct(1.987_569_15e-4, r)
    p = Float(8.333_451_9e-3).addingProduct(p, r)
    p = Float(4.166_579_59e-2).addingProduct(p, r)
    p = Float(0.166_666_655).addingProduct(p, r)
    p = Float(0.500_000_01).addingProduct(p, r)
    p = (r + 1).addingProduct(p, r * r)
    let scale = Float(bitPattern: (shifted.bitPattern &- roundingMagic.bitPattern &+ 127) &<< 23)
    return p * scale
  }

  /// Floats of scratch `flashAttentionBlock` needs for head size `d`.
  func flashScratchCount(d: Int) -> Int {
    let (mr, nr) = (gemmTileRows, gemmTileColumns)
    let paddedD = (d + mr - 1) / mr * mr
    return d * nr + keysPerBlock * nr + paddedD * nr + mr * Swift.max(d, keysPerBlock) + 3 * nr
  }

  /// Queries per block of `flashAttentionBlock`.
  let flashQueryBlock = gemmTileColumns

#endif

// Multi-head scaled dot-product attention, softmax(Q·Kᵀ/√d)·V, computed a block of queries at a
// time so a 4096-token self-attention never holds heads × 4096 × 4096 scores.
// Legend: b batch, tq/tk query/key tokens, heads, d head size (channels = heads · d).

import Foundation

/// Bytes of score scratch one block of queries may use (per thread). Small enough that the
/// scores of a block stay in L2 between the Q·Kᵀ product, the softmax and the P·V product.
private let attentionScoreBudget = 2 << 20

/// Attention over `[b, tq, heads·d]` queries and `[b, tk, heads·d]` keys and values, heads laid
/// side by side in the channel axis (as diffusers' `Attention` and CLIP produce them) ->
/// `[b, tq, heads·d]`. `causal` masks key j > query i (CLIP's text model; needs tq == tk).
/// The (batch item, head, query block) tasks run on our threads, each with single-threaded
/// GEMMs; once `options` is cancelled the remaining tasks are skipped and zeros returned.
public func scaledDotProductAttention(
  query: Tensor, key: Tensor, value: Tensor, heads: Int, causal: Bool = false,
  options: ComputeOptions
) -> Tensor {
  let (b, tq, channels) = (query.shape[0], query.shape[1], query.shape[2])
  let tk = key.shape[1]
  precondition(
    key.shape == [b, tk, channels] && value.shape == key.shape && channels % heads == 0,
    "attention: query \(query.shape), key \(key.shape), value \(value.shape), heads \(heads)")
  precondition(!causal || tq == tk, "causal attention needs as many queries as keys")
  let d = channels / heads
  let scale = 1 / Float(d).squareRoot()
  #if SD_AVX512 || SD_AVX2
    let output = fusedAttention(
      query: query, key: key, value: value, heads: heads, causal: causal, scale: scale,
      options: options)
  #else
    let output = blockedAttention(
      query: query, key: key, value: value, heads: heads, causal: causal, scale: scale,
      options: options)
  #endif
  // Skipped tasks left their rows unwritten; a cancelled pass returns zeros like the models.
  return options.isCancelled ? Tensor(zeros: output.shape) : output
}

#if SD_AVX512 || SD_AVX2
  /// The (batch item, head, query block) tasks of `flashAttentionBlock` on our threads; each
  /// writes the d columns of its head for its block of query rows.
  private func fusedAttention(
    query: Tensor, key: Tensor, value: Tensor, heads: Int, causal: Bool, scale: Float,
    options: ComputeOptions
  ) -> Tensor {
    let (b, tq, channels) = (query.shape[0], query.shape[1], query.shape[2])
    let tk = key.shape[1]
    let d = channels / heads
    let queryBlocks = flashQueryBlocksPerCall(keys: tk, d: d)
    let queriesPerTask = queryBlocks * flashQueryBlock
    let blocks = (tq + queriesPerTask - 1) / queriesPerTask
    let tasks = b * heads * blocks
    // Chunks of tasks, so a worker allocates its scratch once per chunk, not per task.
    let grain = Swift.max(1, tasks / 16)
    // With several heads, a worker copies its head's K and V rows next to each other (tk × d
    // floats each, 0.6 MB at 4096 tokens and d = 40) and reads them there: in place, a key
    // block's rows lie `channels` floats apart, 144 rows over 45 pages at 320 channels, more
    // than the L1 TLB holds with V's. The chunks run a head's query blocks in order, so each
    // head is copied about once a chunk. Same bits.
    let copiesHeads = heads > 1
    let headFloats = copiesHeads ? tk * d : 0
    // 16 floats more, to start the scratch on a cache line: its Qᵀ, Sᵀ and Oᵀ rows are 16
    // floats on AVX2, so each is then one line instead of straddling two.
    let scratchCount = flashScratchCount(d: d, queryBlocks: queryBlocks) + 2 * headFloats + 16
    return Tensor(shape: [b, tq, channels]) { out in
      query.scalars.withUnsafeBufferPointer { pq in
        key.scalars.withUnsafeBufferPointer { pk in
          value.scalars.withUnsafeBufferPointer { pv in
            guard let qBase = pq.baseAddress, let kBase = pk.baseAddress,
              let vBase = pv.baseAddress, let oBase = out.baseAddress
            else { return }
            let (q, k, v, o) = (
              SharedPointer(qBase), SharedPointer(kBase), SharedPointer(vBase),
              SharedMutablePointer(oBase)
            )
            parallelFor(tasks, grain: grain, options: options) { range in
              withUnsafeTemporaryAllocation(of: Float.self, capacity: scratchCount) { buffer in
                guard let start = buffer.baseAddress else { return }
                let misalignment = Int(bitPattern: start) & 63
                let scratch = start + (64 - misalignment) % 64 / 4
                let (headKeys, headValues) = (scratch, scratch + headFloats)
                let flashScratch = scratch + 2 * headFloats
                var copiedHead = -1
                for task in range where !options.isCancelled {
                  let item = task / (heads * blocks)
                  let head = (task / blocks) % heads
                  let q0 = (task % blocks) * queriesPerTask
                  let offset = head * d
                  var (keys, values) = (
                    k.base + item * tk * channels + offset, v.base + item * tk * channels + offset
                  )
                  if copiesHeads {
                    if copiedHead != task / blocks {
                      for row in 0..<tk {
                        (headKeys + row * d).update(from: keys + row * channels, count: d)
                        (headValues + row * d).update(from: values + row * channels, count: d)
                      }
                      copiedHead = task / blocks
                    }
                    (keys, values) = (UnsafePointer(headKeys), UnsafePointer(headValues))
                  }
                  flashAttentionBlock(
                    query: q.base + item * tq * channels + offset, key: keys, value: values,
                    output: o.base + item * tq * channels + offset, channels: channels,
                    keyRowStride: copiesHeads ? d : channels, d: d, keys: tk, q0: q0,
                    count: Swift.min(queriesPerTask, tq - q0), scale: scale, causal: causal,
                    scratch: flashScratch)
                }
              }
            }
          }
        }
      }
    }
  }
#endif

/// The portable builds' attention: per (batch item, head, query block), Q·Kᵀ by `sgemm` into a
/// block of scores, a softmax pass, and P·V by `sgemm`.
private func blockedAttention(
  query: Tensor, key: Tensor, value: Tensor, heads: Int, causal: Bool, scale: Float,
  options: ComputeOptions
) -> Tensor {
  let (b, tq, channels) = (query.shape[0], query.shape[1], query.shape[2])
  let tk = key.shape[1]
  let d = channels / heads
  let blockRows = Swift.max(1, Swift.min(tq, attentionScoreBudget / (4 * Swift.max(1, tk))))
  let blocks = (tq + blockRows - 1) / blockRows
  let tasks = b * heads * blocks
  let single = ComputeOptions(threadCount: 1)
  // Chunks of tasks, so a worker allocates its scratch once per chunk, not per task.
  let grain = Swift.max(1, tasks / 8)
  return Tensor(shape: [b, tq, channels]) { out in
    query.scalars.withUnsafeBufferPointer { pq in
      key.scalars.withUnsafeBufferPointer { pk in
        value.scalars.withUnsafeBufferPointer { pv in
          guard let qBase = pq.baseAddress, let kBase = pk.baseAddress, let vBase = pv.baseAddress,
            let oBase = out.baseAddress
          else { return }
          let (q, k, v, o) = (
            SharedPointer(qBase), SharedPointer(kBase), SharedPointer(vBase),
            SharedMutablePointer(oBase)
          )
          // Each task writes the d columns of its head for its block of query rows.
          parallelFor(tasks, grain: grain, options: options) { range in
            var scores = [Float](repeating: 0, count: blockRows * tk)
            var inverseSums = [Float](repeating: 0, count: blockRows)
            scores.withUnsafeMutableBufferPointer { ps in
              inverseSums.withUnsafeMutableBufferPointer { pi in
                guard let s = ps.baseAddress, let inverse = pi.baseAddress else { return }
                for task in range where !options.isCancelled {
                  let item = task / (heads * blocks)
                  let head = (task / blocks) % heads
                  let q0 = (task % blocks) * blockRows
                  let rows = Swift.min(blockRows, tq - q0)
                  // A head is a column slice of width d; sgemm reads it in place via the row stride.
                  let qh = q.base + item * tq * channels + head * d
                  let kh = k.base + item * tk * channels + head * d
                  let vh = v.base + item * tk * channels + head * d
                  let outRows = o.base + (item * tq + q0) * channels + head * d
                  sgemm(
                    transposeA: false, transposeB: true, m: rows, n: tk, k: d,
                    a: qh + q0 * channels, lda: channels, b: kh, ldb: channels, c: s, ldc: tk)
                  // Unnormalised exponentials: the 1/Σ is applied to the d-wide output rows
                  // instead of the tk-wide score rows, one pass over the scores fewer.
                  softmaxRows(
                    s, rows: rows, width: tk, causalOffset: causal ? q0 : nil, scale: scale,
                    inverseSums: inverse, options: single)
                  sgemm(
                    transposeA: false, transposeB: false, m: rows, n: d, k: tk,
                    a: s, lda: tk, b: vh, ldb: channels, c: outRows, ldc: channels)
                  for row in 0..<rows {
                    let line = outRows + row * channels
                    for c in 0..<d { line[c] *= inverse[row] }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

/// Plain-loop reference for `scaledDotProductAttention` (tests compare the two).
public func referenceAttention(
  query: Tensor, key: Tensor, value: Tensor, heads: Int, causal: Bool = false
) -> Tensor {
  let (b, tq, channels) = (query.shape[0], query.shape[1], query.shape[2])
  let tk = key.shape[1]
  let d = channels / heads
  var out = [Float](repeating: 0, count: b * tq * channels)
  for item in 0..<b {
    for head in 0..<heads {
      for i in 0..<tq {
        let valid = causal ? i + 1 : tk
        var logits = [Double](repeating: 0, count: valid)
        for j in 0..<valid {
          var dot: Double = 0
          for c in 0..<d {
            dot +=
              Double(query.scalars[(item * tq + i) * channels + head * d + c])
              * Double(key.scalars[(item * tk + j) * channels + head * d + c])
          }
          logits[j] = dot / Double(d).squareRoot()
        }
        let maximum = logits.max() ?? 0
        let weights = logits.map { exp($0 - maximum) }
        let total = weights.reduce(0, +)
        for c in 0..<d {
          var sum: Double = 0
          for j in 0..<valid {
            sum += weights[j] * Double(value.scalars[(item * tk + j) * channels + head * d + c])
          }
          out[(item * tq + i) * channels + head * d + c] = Float(sum / total)
        }
      }
    }
  }
  return Tensor(shape: [b, tq, channels], scalars: out)
}

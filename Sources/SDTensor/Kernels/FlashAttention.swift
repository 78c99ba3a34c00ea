// Fused attention for builds with our GEMM (FlashAttention's online softmax, Dao et al. 2022, on
// the CPU): for a block of queries, keys are visited a block at a time; the block's scores are
// made by the GEMM register tile, turned into probabilities with a running maximum and sum,
// and multiplied into the output block at once, so the tq × tk score matrix is never stored.
// Everything is computed transposed, with queries along the vector lanes: Sᵀ = K·Qᵀ for a
// block, then Oᵀ += Vᵀ·Pᵀ. The running maximum and sum are then lane-wise per query (no
// horizontal reductions) and stay in registers, and Pᵀ is already in the layout the tile reads
// its B operand in. Scores are made in base-2 units (Q is scaled by log₂e once), so the
// probabilities are powers of two: `softmaxExp2`.
// Legend: b batch, tq/tk query/key tokens, d head size; mr × nr the GEMM tile (nr queries a
// block, two vectors), kb keys a block, vr the rows of the P·V tile.

#if SD_AVX512 || SD_AVX2

  /// Keys per block. The same on every ISA (a multiple of both tiles' mr): the block boundaries
  /// decide where the online softmax rescales, so they decide the bits. Measured on one thread,
  /// 8 heads × 4096 × 4096, d = 40: 96 keys 167 GFLOP/s, 144 172–184, 192 169, 288 169 (the Sᵀ
  /// block, 18 KB at 144, shares L1 with the K and V rows it is made from).
  private let keysPerBlock = 144

  /// One value per query of a block: the two vectors of a tile row.
  private typealias QueryLanes = (TileVector, TileVector)

  /// Query blocks that visit each key block together, for `keys` keys of head size d. A head's K
  /// and V slices at 4096 keys × 40 floats (read in place: 1.5 MB of cache lines) do not fit a
  /// 1 MB L2, so a lone query block reads them from L3 on every pass; four blocks use each key
  /// block (55 KB at d = 40) while it is in L1/L2. Measured with `laneMax` as one `vmaxps`,
  /// 2 × 8 heads × 4096², d = 40, six interleaved runs on a shared Zen 5: one thread 143 → 154
  /// GFLOP/s (median), two threads 289 → 288 (within the host's noise); 2 × 10 × 4096², d = 64,
  /// two threads 0.278–0.282 → 0.243–0.260 s. Slices under 512 KB (half of that L2) gain
  /// nothing, and their few queries spread over fewer tasks (64 tokens, d = 160: 0.3–0.4 →
  /// 0.5–0.6 ms), so they keep one block. It changes no bits: each query block's arithmetic is
  /// the same whichever blocks share its pass.
  func flashQueryBlocksPerCall(keys: Int, d: Int) -> Int {
    2 * keys * d * MemoryLayout<Float>.size >= 512 << 10 ? 4 : 1
  }

  /// softmax(Q·Kᵀ·scale)·V for one head of one batch item, queries `q0..<q0+count`: query and
  /// output rows of `channels` floats (heads side by side), key and value rows `keyRowStride`
  /// floats apart; `causal` masks key j > query i. The queries go in blocks of nr, each with its
  /// own running maximum, sum and output; every key block is visited by all of them in turn.
  /// `scratch` holds at least `flashScratchCount(d:queryBlocks:)` floats for that many blocks.
  func flashAttentionBlock(
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    output: UnsafeMutablePointer<Float>, channels: Int, keyRowStride ks: Int, d: Int, keys tk: Int,
    q0: Int, count: Int, scale: Float, causal: Bool, scratch: UnsafeMutablePointer<Float>
  ) {
    typealias V = TileVector
    let (mr, nr, vr) = (gemmTileRows, gemmTileColumns, gemmShortTileRows)
    let (fullRows, paddedD) = valueTileRows(d: d)
    let groups = (count + nr - 1) / nr
    // Scratch: per query block Qᵀ [d][nr] and Oᵀ [paddedD][nr]; then one Sᵀ/Pᵀ [kb][nr] and
    // an edge tile [mr][max(d, kb)] for whichever block is being worked on.
    let groupFloats = (d + paddedD) * nr
    let scores = scratch + groups * groupFloats
    let edge = scores + keysPerBlock * nr
    let rowBytes = nr * 4

    // Qᵀ·log₂e·scale: column c of block g is query q0 + g·nr + c; missing queries are zero
    // columns (their results are dropped).
    let queryScale = scale * 1.442_695_04
    for group in 0..<groups {
      let queriesT = scratch + group * groupFloats
      for p in 0..<d {
        for c in 0..<nr {
          let q = group * nr + c
          queriesT[p * nr + c] = q < count ? query[(q0 + q) * channels + p] * queryScale : 0
        }
      }
      (queriesT + d * nr).update(repeating: 0, count: paddedD * nr)
    }
    var maxima = [QueryLanes](
      repeating: (V(repeating: -.infinity), V(repeating: -.infinity)), count: groups)
    var sums = [QueryLanes](repeating: (V(), V()), count: groups)
    // With the causal mask the last query of a block sees keys 0...its first query + nr − 1.
    func keyEnd(_ group: Int) -> Int {
      causal ? Swift.min(tk, q0 + Swift.min(count, (group + 1) * nr)) : tk
    }
    for k0 in stride(from: 0, to: keyEnd(groups - 1), by: keysPerBlock) {
      for group in 0..<groups where k0 < keyEnd(group) {
        let kc = Swift.min(keysPerBlock, keyEnd(group) - k0)
        let queriesT = scratch + group * groupFloats
        let outT = queriesT + d * nr
        // Sᵀ[r][c] = K[k0 + r] · Q[q0 + group·nr + c] (base 2), mr key rows per tile, read
        // where they lie; the writer takes the block's new maximum on the way.
        var writer = ScoreWriter(
          scores: UnsafeMutableRawPointer(scores), rowBytes: rowBytes, maximum: maxima[group],
          causalOffset: causal ? k0 - (q0 + group * nr) : nil)
        for tile in stride(from: 0, to: kc, by: mr) {
          let rows = Swift.min(mr, kc - tile)
          var a = key + (k0 + tile) * ks
          var rowStride = ks
          if rows < mr {
            // The last key rows, zero-padded to a whole tile (the writer drops the padding rows).
            for r in 0..<mr {
              for p in 0..<d { edge[r * d + p] = r < rows ? a[r * ks + p] : 0 }
            }
            (a, rowStride) = (UnsafePointer(edge), d)
          }
          writer.firstRow = tile
          writer.validRows = rows
          gemmMicroKernel(
            depth: d, a: a, rowStride: rowStride, depthStride: 1, b: queriesT, writer: &writer)
        }
        // The online softmax, lane-wise per query: the factor that moves what was accumulated
        // so far onto the new maximum, then the block's probabilities and their sums.
        let correction = (
          softmaxExp2(maxima[group].0 - writer.maximum.0),
          softmaxExp2(maxima[group].1 - writer.maximum.1)
        )
        let maximum = writer.maximum
        maxima[group] = maximum
        var sum = (sums[group].0 * correction.0, sums[group].1 * correction.1)
        let raw = UnsafeMutableRawPointer(scores)
        for r in 0..<kc {
          let offset = r * rowBytes
          let p0 = softmaxExp2(raw.loadUnaligned(fromByteOffset: offset, as: V.self) - maximum.0)
          let p1 = softmaxExp2(
            raw.loadUnaligned(fromByteOffset: offset + rowBytes / 2, as: V.self) - maximum.1)
          raw.storeBytes(of: p0, toByteOffset: offset, as: V.self)
          raw.storeBytes(of: p1, toByteOffset: offset + rowBytes / 2, as: V.self)
          sum = (sum.0 + p0, sum.1 + p1)
        }
        sums[group] = sum
        // Oᵀ[j][c] = correction[c] · Oᵀ[j][c] + Σ_r V[k0 + r][j] · Pᵀ[r][c]: Vᵀ is V read with
        // its strides swapped, full tiles up to fullRows, then short tiles (measured on the AVX2
        // build, one thread: 85–89 → 88–102 GFLOP/s over d = 40…160 against short tiles only;
        // the same on AVX-512). For head sizes that leave a remainder, the dimensions past the
        // last whole tile are copied into a zero-padded tile: reading them in place would read
        // past d (the next head's, or past the tensor's end).
        var tile = 0
        while tile < fullRows {
          var accumulator = RescalingAccumulator<FullTile>(
            output: UnsafeMutableRawPointer(outT + tile * nr), rowBytes: rowBytes,
            correction: correction)
          gemmMicroKernel(
            depth: kc, a: value + k0 * ks + tile, rowStride: 1, depthStride: ks,
            b: scores, writer: &accumulator)
          tile += mr
        }
        while tile < paddedD {
          var a = value + k0 * ks + tile
          var (rowStride, depthStride) = (1, ks)
          if tile + vr > d {
            for r in 0..<vr {
              for p in 0..<kc { edge[r * kc + p] = tile + r < d ? a[p * ks + r] : 0 }
            }
            (a, rowStride, depthStride) = (UnsafePointer(edge), kc, 1)
          }
          var accumulator = RescalingAccumulator<ShortTile>(
            output: UnsafeMutableRawPointer(outT + tile * nr), rowBytes: rowBytes,
            correction: correction)
          gemmMicroKernel(
            depth: kc, a: a, rowStride: rowStride, depthStride: depthStride, b: scores,
            writer: &accumulator)
          tile += vr
        }
      }
    }
    let inverse = scores
    for group in 0..<groups {
      let outT = scratch + group * groupFloats + d * nr
      UnsafeMutableRawPointer(inverse).storeBytes(of: 1 / sums[group].0, as: V.self)
      UnsafeMutableRawPointer(inverse).storeBytes(
        of: 1 / sums[group].1, toByteOffset: rowBytes / 2, as: V.self)
      for c in 0..<Swift.min(nr, count - group * nr) {
        let row = output + (q0 + group * nr + c) * channels
        for j in 0..<d { row[j] = outT[j * nr + c] * inverse[c] }
      }
    }
  }

  /// Stores a K·Qᵀ tile's rows into the Sᵀ block and keeps the lane-wise maximum of what it
  /// stored. Rows from `validRows` on are the last tile's zero padding: neither stored nor
  /// counted. With `causalOffset` (the block's first key minus its first query) key rows past a
  /// lane's query are set to −∞ first.
  private struct ScoreWriter: TileWriter {
    static var rows: Int { gemmTileRows }
    let scores: UnsafeMutableRawPointer
    let rowBytes: Int
    var maximum: QueryLanes
    let causalOffset: Int?
    var firstRow = 0
    var validRows = 0

    @inline(__always)
    mutating func row(_ index: Int, _ left: TileVector, _ right: TileVector) {
      guard index < validRows else { return }
      var (left, right) = (left, right)
      let row = firstRow + index
      if let causalOffset {
        // Key k0 + row is after query q0 + c for the lanes c < row + causalOffset.
        let lanes = TileVector.scalarCount
        for c in 0..<Swift.min(2 * lanes, Swift.max(0, row + causalOffset)) {
          if c < lanes { left[c] = -.infinity } else { right[c - lanes] = -.infinity }
        }
      }
      let offset = row * rowBytes
      scores.storeBytes(of: left, toByteOffset: offset, as: TileVector.self)
      scores.storeBytes(of: right, toByteOffset: offset + rowBytes / 2, as: TileVector.self)
      maximum = (laneMax(maximum.0, left), laneMax(maximum.1, right))
    }
  }

  /// The rows of a P·V tile, as a type, so each height is its own specialisation.
  private protocol TileHeight { static var rows: Int { get } }
  private enum FullTile: TileHeight { static var rows: Int { gemmTileRows } }
  private enum ShortTile: TileHeight { static var rows: Int { gemmShortTileRows } }

  /// Adds a P·V tile's rows onto the Oᵀ rows, after moving those onto the new maximum:
  /// `correction · Oᵀ + acc`.
  private struct RescalingAccumulator<Height: TileHeight>: TileWriter {
    static var rows: Int { Height.rows }
    let output: UnsafeMutableRawPointer
    let rowBytes: Int
    let correction: QueryLanes

    @inline(__always)
    func row(_ index: Int, _ left: TileVector, _ right: TileVector) {
      let offset = index * rowBytes
      let half = offset + rowBytes / 2
      let old0 = output.loadUnaligned(fromByteOffset: offset, as: TileVector.self)
      let old1 = output.loadUnaligned(fromByteOffset: half, as: TileVector.self)
      output.storeBytes(
        of: left.addingProduct(old0, correction.0), toByteOffset: offset, as: TileVector.self)
      output.storeBytes(
        of: right.addingProduct(old1, correction.1), toByteOffset: half, as: TileVector.self)
    }
  }

  /// 2^x for the softmax's x ≤ 0 (a score minus its running maximum, in base-2 units; −∞ for
  /// masked keys), a whole vector at a time: x = n + r with n = round(x), r ∈ [−½, ½]; 2^r by a
  /// degree-5 polynomial (relative error below 1.9e-7, fitted to 2^r in relative error), 2^n
  /// assembled in the exponent field. Below −127 the exponent field is 0 and the result exactly
  /// 0, so −∞ needs no special case.
  @inline(__always)
  private func softmaxExp2(_ value: TileVector) -> TileVector {
    let x = laneMax(value, TileVector(repeating: -127))
    let shifted = x + roundingMagic
    let r = x - (shifted - roundingMagic)
    var p = TileVector(repeating: 9.671_699_26e-3).addingProduct(r, 1.321_867_34e-3)
    p = TileVector(repeating: 5.550_893_02e-2).addingProduct(p, r)
    p = TileVector(repeating: 0.240_222_380).addingProduct(p, r)
    p = TileVector(repeating: 0.693_146_884).addingProduct(p, r)
    p = TileVector(repeating: 1).addingProduct(p, r)
    let bits = unsafeBitCast(shifted, to: TileVector.MaskStorage.self)
    let exponent = (bits &- (Int32(bitPattern: roundingMagic.bitPattern) &- 127)) &<< 23
    return p * unsafeBitCast(exponent, to: TileVector.self)
  }

  /// The P·V tiles for head size `d`: full tiles over dimensions `0..<full`, the most that leave
  /// a multiple of vr for the short ones (every SD head size: 40 = 12 + 12 + 8 + 8 on AVX-512,
  /// 6 · 6 + 4 on AVX2), then short tiles up to `padded` (past d only for other head sizes).
  private func valueTileRows(d: Int) -> (full: Int, padded: Int) {
    let (mr, vr) = (gemmTileRows, gemmShortTileRows)
    var full = d / mr * mr
    while full > 0 && (d - full) % vr != 0 { full -= mr }
    return (full, full + (d - full + vr - 1) / vr * vr)
  }

  /// Floats of scratch `flashAttentionBlock` needs for head size `d` and up to `queryBlocks`
  /// blocks of queries.
  func flashScratchCount(d: Int, queryBlocks: Int) -> Int {
    let (mr, nr) = (gemmTileRows, gemmTileColumns)
    let paddedD = valueTileRows(d: d).padded
    return queryBlocks * (d + paddedD) * nr + keysPerBlock * nr + mr * Swift.max(d, keysPerBlock)
  }

  /// Queries per block of `flashAttentionBlock`.
  let flashQueryBlock = gemmTileColumns

#endif

// Winograd F(2×2, 3×3): 4×4 input patches, 16 transform positions (interpolation points 0, ±1,
// ∞), for images too small for enough 4×4 tiles (the UNet's 16×16 level):
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//   G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//   Aᵀ = [1 1 1 0; 0 1 −1 −1]
// As in F4, both transforms run along whole tile rows: each input row is split into two phases
// (x mod 2), after which every step is a contiguous loop over the tiles.

/// F(2×2, 3×3), for images with at least 64 2×2 tiles but fewer 4×4 ones.
enum WinogradF2: WinogradTiling {
  static var tile: Int { 2 }

  /// U[ξ][o][c] = (G g Gᵀ)[ξ] for each of the o·c 3×3 kernels, eight kernels at a time, one per
  /// lane. G's entries are 0, ±½ and 1, so this is done in float (each U value is a sum of at
  /// most nine taps scaled by ¼); F4's double-precision transform made an F2 convolution of
  /// 1280 channels at 16×16 spend 30 % of its time here.
  static func transformWeights(
    _ weight: UnsafePointer<Float>, o: Int, c: Int, into u: UnsafeMutablePointer<Float>,
    options: ComputeOptions
  ) {
    typealias V = SIMD8<Float>
    let (source, destination) = (SharedPointer(weight), SharedMutablePointer(u))
    let plane = o * c
    // Each group of eight kernels writes its own eight columns of the 16 rows of U.
    parallelFor((plane + 7) / 8, grain: 256, options: options) { groups in
      withUnsafeTemporaryAllocation(of: V.self, capacity: 18 + 12 + 16) { scratch in
        guard let taps = scratch.baseAddress else { return }
        // taps[t] = tap t of each kernel (with room for a short last group); columns[3·row +
        // col] = (G g)[row][col]; rows[4·row + col] = U[4·row + col].
        let (columns, rows) = (taps + 18, taps + 30)
        for group in groups {
          let first = group * 8
          let count = Swift.min(8, plane - first)
          gatherTaps(source.base + first * 9, count: count, into: taps)
          for col in 0..<3 {
            let (a, b, c) = (taps[col], taps[3 + col], taps[6 + col])
            columns[col] = a
            columns[3 + col] = (a + b + c) * 0.5
            columns[6 + col] = (a - b + c) * 0.5
            columns[9 + col] = c
          }
          for row in 0..<4 {
            let (a, b, c) = (columns[3 * row], columns[3 * row + 1], columns[3 * row + 2])
            rows[4 * row] = a
            rows[4 * row + 1] = (a + b + c) * 0.5
            rows[4 * row + 2] = (a - b + c) * 0.5
            rows[4 * row + 3] = c
          }
          for position in 0..<16 {
            store8(rows[position], destination.base + position * plane + first, valid: count)
          }
        }
      }
    }
  }

  /// Bᵀ d B for the tiles of one tile row: `p` holds their four input rows split into two
  /// phases (row r at `r·2·span`), `t` gets Bᵀ d in the same layout (one readable vector past
  /// it); position ξ of tile tx goes to `v[ξ·plane + tx]`.
  static func transformInputRow(
    _ p: UnsafePointer<Float>, rowsT t: UnsafeMutablePointer<Float>, span: Int, tilesWide: Int,
    into v: UnsafeMutablePointer<Float>, plane: Int
  ) {
    let width = 2 * span
    for q in stride(from: 0, to: width, by: 8) {
      let (d0, d1) = (load8(p + q), load8(p + width + q))
      let (d2, d3) = (load8(p + 2 * width + q), load8(p + 3 * width + q))
      store8(d0 - d2, t + q)
      store8(d1 + d2, t + width + q)
      store8(d2 - d1, t + 2 * width + q)
      store8(d1 - d3, t + 3 * width + q)
    }
    for i in 0..<4 {
      // e_k of tile tx is row i of Bᵀ d at patch column k: phase k mod 2, index tx + k/2.
      let e = t + i * width
      let out = v + i * 4 * plane
      for tx in stride(from: 0, to: tilesWide, by: 8) {
        let (e0, e1) = (load8(e + tx), load8(e + span + tx))
        let (e2, e3) = (load8(e + tx + 1), load8(e + span + tx + 1))
        let valid = tilesWide - tx
        store8(e0 - e2, out + tx, valid: valid)
        store8(e1 + e2, out + plane + tx, valid: valid)
        store8(e2 - e1, out + 2 * plane + tx, valid: valid)
        store8(e1 - e3, out + 3 * plane + tx, valid: valid)
      }
    }
  }

  /// Aᵀ M A for the tiles of one tile row, added onto its first `rows` output rows (`image`,
  /// `image + w`), dropping columns past w: M[ξ] of tile tx is `products[ξ·plane + tx]`; `s`
  /// holds Aᵀ M, s[(4a + j)·span + tx] = row a, column j.
  static func transformOutputRow(
    _ products: UnsafePointer<Float>, plane: Int, span: Int, tilesWide: Int,
    scratch s: UnsafeMutablePointer<Float>, into image: UnsafeMutablePointer<Float>, rows: Int,
    width w: Int
  ) {
    for j in 0..<4 {
      for tx in stride(from: 0, to: tilesWide, by: 8) {
        let column = products + j * plane + tx
        let (m0, m1) = (load8(column), load8(column + 4 * plane))
        let (m2, m3) = (load8(column + 8 * plane), load8(column + 12 * plane))
        store8(m0 + m1 + m2, s + j * span + tx)
        store8(m1 - m2 - m3, s + (4 + j) * span + tx)
      }
    }
    for a in 0..<rows {
      let row = s + a * 4 * span
      let line = image + a * w
      for tx in stride(from: 0, to: tilesWide, by: 8) {
        let (r0, r1) = (load8(row + tx), load8(row + span + tx))
        let (r2, r3) = (load8(row + 2 * span + tx), load8(row + 3 * span + tx))
        let (c0, c1) = (r0 + r1 + r2, r1 - r2 - r3)
        // Output column 2·tile + b: the two columns' vectors interleaved.
        let pairs = SIMD16(
          c0[0], c1[0], c0[1], c1[1], c0[2], c1[2], c0[3], c1[3],
          c0[4], c1[4], c0[5], c1[5], c0[6], c1[6], c0[7], c1[7])
        let x0 = 2 * tx
        if x0 + 16 <= w {
          let target = UnsafeMutableRawPointer(line + x0)
          let sum = target.loadUnaligned(as: SIMD16<Float>.self) + pairs
          target.storeBytes(of: sum, as: SIMD16<Float>.self)
        } else {
          for lane in 0..<Swift.max(0, w - x0) { line[x0 + lane] += pairs[lane] }
        }
      }
    }
  }

  /// Splits one input row into two phase rows: phase φ, index j holds x = 2j + φ − 1, zero where
  /// that is outside the row (each phase row has `span` entries).
  static func splitPhases(
    _ input: UnsafePointer<Float>, count w: Int, into line: UnsafeMutablePointer<Float>, span: Int
  ) {
    line.initialize(repeating: 0, count: 2 * span)
    // x = 0 is phase 1 of j = 0; then blocks of 16 (j…j+7, both phases) split into their even and
    // odd lanes; the rest one by one.
    if w > 0 { line[span] = input[0] }
    var x = 1
    while x + 16 <= w {
      let j = (x + 1) / 2
      let values = UnsafeRawPointer(input + x).loadUnaligned(as: SIMD16<Float>.self)
      store8(values.evenHalf, line + j)
      store8(values.oddHalf, line + span + j)
      x += 16
    }
    while x < w {
      let shifted = x + 1
      line[(shifted & 1) * span + shifted >> 1] = input[x]
      x += 1
    }
  }
}

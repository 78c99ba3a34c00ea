// Winograd F(4×4, 3×3): 6×6 input patches, 36 transform positions. Transforms (rows and
// columns alike; interpolation points 0, ±1, ±2, ∞):
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//   G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
// Both transforms run along whole tile rows: a tile row's six input rows are split into four
// phases (x mod 4), after which every step is a contiguous loop over the tiles that LLVM
// vectorises.

/// F(4×4, 3×3), for images with at least 64 4×4 tiles.
enum WinogradF4: WinogradTiling {
  static var tile: Int { 4 }

  /// U[ξ][o][c] = (G g Gᵀ)[ξ] for each of the o·c 3×3 kernels, computed in double precision (the
  /// sixths and twenty-fourths are not exact in float), eight kernels at a time, one per lane.
  /// Scalar, one kernel at a time, this took 30 % of a 640-channel convolution at 32×32; each
  /// lane does the same operations in the same order, so the values are the same.
  static func transformWeights(
    _ weight: UnsafePointer<Float>, o: Int, c: Int, into u: UnsafeMutablePointer<Float>,
    options: ComputeOptions
  ) {
    typealias V = SIMD8<Double>
    let (source, destination) = (SharedPointer(weight), SharedMutablePointer(u))
    let plane = o * c
    // Each group of eight kernels writes its own eight columns of the 36 rows of U.
    parallelFor((plane + 7) / 8, grain: 256, options: options) { groups in
      withUnsafeTemporaryAllocation(of: V.self, capacity: 9 + 18 + 6) { scratch in
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 18) { gathered in
          guard let taps = scratch.baseAddress, let floats = gathered.baseAddress else { return }
          // columns[3·row + col] = (G g)[row][col]; row6[col] = U[6·row + col] of one row.
          let (columns, row6) = (taps + 9, taps + 27)
          for group in groups {
            let first = group * 8
            let count = Swift.min(8, plane - first)
            gatherTaps(source.base + first * 9, count: count, into: floats)
            for t in 0..<9 { taps[t] = V(floats[t]) }
            for col in 0..<3 {
              interpolate(taps[col], taps[3 + col], taps[6 + col], into: columns + col, stride: 3)
            }
            for row in 0..<6 {
              let gRow = columns + 3 * row
              interpolate(gRow[0], gRow[1], gRow[2], into: row6, stride: 1)
              for col in 0..<6 {
                store8(
                  SIMD8<Float>(row6[col]), destination.base + (6 * row + col) * plane + first,
                  valid: count)
              }
            }
          }
        }
      }
    }
  }

  /// G·(a, b, c)ᵀ, lane by lane: row r of the result goes to `out[r·stride]`. Multiplies by the
  /// reciprocals instead of dividing: a double division costs ~10 multiplies and made this
  /// transform 1.6 % of a UNet step; the difference in double precision never reaches the float
  /// result.
  @inline(__always) private static func interpolate(
    _ a: SIMD8<Double>, _ b: SIMD8<Double>, _ c: SIMD8<Double>,
    into out: UnsafeMutablePointer<SIMD8<Double>>, stride: Int
  ) {
    let (sixth, twelfth, twentyFourth) = (1.0 / 6, 1.0 / 12, 1.0 / 24)
    out[0] = a * 0.25
    out[stride] = -(a + b + c) * sixth
    out[2 * stride] = -(a - b + c) * sixth
    out[3 * stride] = a * twentyFourth + b * twelfth + c * sixth
    out[4 * stride] = a * twentyFourth - b * twelfth + c * sixth
    out[5 * stride] = c
  }

  /// Bᵀ d B for the tiles of one tile row: `p` holds their six input rows split into four
  /// phases (row r at `r·4·span`), `t` gets Bᵀ d in the same layout (one readable vector past
  /// it); position ξ of tile tx goes to `v[ξ·plane + tx]`.
  static func transformInputRow(
    _ p: UnsafePointer<Float>, rowsT t: UnsafeMutablePointer<Float>, span: Int, tilesWide: Int,
    into v: UnsafeMutablePointer<Float>, plane: Int
  ) {
    let width = 4 * span
    for q in stride(from: 0, to: width, by: 8) {
      let (d0, d1, d2) = (load8(p + q), load8(p + width + q), load8(p + 2 * width + q))
      let (d3, d4, d5) = (
        load8(p + 3 * width + q), load8(p + 4 * width + q), load8(p + 5 * width + q)
      )
      store8(4 * d0 - 5 * d2 + d4, t + q)
      store8(d4 + d3 - 4 * (d1 + d2), t + width + q)
      store8(d4 - d3 + 4 * (d1 - d2), t + 2 * width + q)
      store8(d4 - d2 + 2 * (d3 - d1), t + 3 * width + q)
      store8(d4 - d2 - 2 * (d3 - d1), t + 4 * width + q)
      store8(4 * d1 - 5 * d3 + d5, t + 5 * width + q)
    }
    for i in 0..<6 {
      // e_k of tile tx is row i of Bᵀ d at patch column k: phase k mod 4, index tx + k/4.
      let e = t + i * width
      let out = v + i * 6 * plane
      for tx in stride(from: 0, to: tilesWide, by: 8) {
        let (e0, e1, e2, e3) = (
          load8(e + tx), load8(e + span + tx), load8(e + 2 * span + tx),
          load8(e + 3 * span + tx)
        )
        let (e4, e5) = (load8(e + tx + 1), load8(e + span + tx + 1))
        let valid = tilesWide - tx
        store8(4 * e0 - 5 * e2 + e4, out + tx, valid: valid)
        store8(e4 + e3 - 4 * (e1 + e2), out + plane + tx, valid: valid)
        store8(e4 - e3 + 4 * (e1 - e2), out + 2 * plane + tx, valid: valid)
        store8(e4 - e2 + 2 * (e3 - e1), out + 3 * plane + tx, valid: valid)
        store8(e4 - e2 - 2 * (e3 - e1), out + 4 * plane + tx, valid: valid)
        store8(4 * e1 - 5 * e3 + e5, out + 5 * plane + tx, valid: valid)
      }
    }
  }

  /// Aᵀ M A for the tiles of one tile row, added onto its first `rows` output rows (`image`,
  /// `image + w`, ...), dropping columns past w: M[ξ] of tile tx is `products[ξ·plane + tx]`;
  /// `s` holds Aᵀ M, s[(6a + j)·span + tx] = row a, column j.
  static func transformOutputRow(
    _ products: UnsafePointer<Float>, plane: Int, span: Int, tilesWide: Int,
    scratch s: UnsafeMutablePointer<Float>, into image: UnsafeMutablePointer<Float>, rows: Int,
    width w: Int
  ) {
    for j in 0..<6 {
      for tx in stride(from: 0, to: tilesWide, by: 8) {
        let column = products + j * plane + tx
        let (m0, m1, m2) = (
          load8(column), load8(column + 6 * plane), load8(column + 12 * plane)
        )
        let (m3, m4, m5) = (
          load8(column + 18 * plane), load8(column + 24 * plane), load8(column + 30 * plane)
        )
        let (sum, difference) = (m1 + m2, m1 - m2)
        store8(m0 + sum + m3 + m4, s + j * span + tx)
        store8(difference + 2 * (m3 - m4), s + (6 + j) * span + tx)
        store8(sum + 4 * (m3 + m4), s + (12 + j) * span + tx)
        store8(difference + 8 * (m3 - m4) + m5, s + (18 + j) * span + tx)
      }
    }
    for a in 0..<rows {
      let row = s + a * 6 * span
      let line = image + a * w
      for tx in stride(from: 0, to: tilesWide, by: 8) {
        let (r0, r1, r2) = (
          load8(row + tx), load8(row + span + tx), load8(row + 2 * span + tx)
        )
        let (r3, r4, r5) = (
          load8(row + 3 * span + tx), load8(row + 4 * span + tx), load8(row + 5 * span + tx)
        )
        let (sum, difference) = (r1 + r2, r1 - r2)
        let c0 = r0 + sum + r3 + r4
        let c1 = difference + 2 * (r3 - r4)
        let c2 = sum + 4 * (r3 + r4)
        let c3 = difference + 8 * (r3 - r4) + r5
        // Four tiles at a time: transpose (output column b, tile) to (tile, b).
        let low = transposed(c0.lowHalf, c1.lowHalf, c2.lowHalf, c3.lowHalf)
        let high = transposed(c0.highHalf, c1.highHalf, c2.highHalf, c3.highHalf)
        let x0 = 4 * tx
        accumulate(low.0, line, at: x0, width: w)
        accumulate(low.1, line, at: x0 + 4, width: w)
        accumulate(low.2, line, at: x0 + 8, width: w)
        accumulate(low.3, line, at: x0 + 12, width: w)
        accumulate(high.0, line, at: x0 + 16, width: w)
        accumulate(high.1, line, at: x0 + 20, width: w)
        accumulate(high.2, line, at: x0 + 24, width: w)
        accumulate(high.3, line, at: x0 + 28, width: w)
      }
    }
  }

  /// Splits one input row into four phase rows: phase φ, index j holds x = 4j + φ − 1, zero where
  /// that is outside the row (each phase row has `span` entries).
  static func splitPhases(
    _ input: UnsafePointer<Float>, count w: Int, into line: UnsafeMutablePointer<Float>, span: Int
  ) {
    line.initialize(repeating: 0, count: 4 * span)
    // x = 0, 1, 2 are phases 1, 2, 3 of j = 0; then blocks of 16 (j…j+3, all phases) transposed
    // from four vectors; the rest one by one.
    for x in 0..<Swift.min(3, w) { line[(x + 1) * span] = input[x] }
    var x = 3
    while x + 16 <= w {
      let j = (x + 1) / 4
      let (a, b, c, d) = transposed(
        load4(input + x), load4(input + x + 4), load4(input + x + 8), load4(input + x + 12))
      store4(a, line + j)
      store4(b, line + span + j)
      store4(c, line + 2 * span + j)
      store4(d, line + 3 * span + j)
      x += 16
    }
    while x < w {
      let shifted = x + 1
      line[(shifted & 3) * span + shifted >> 2] = input[x]
      x += 1
    }
  }
}

/// line[x…x+3] += values, dropping the columns at or past `width`.
@inline(__always) private func accumulate(
  _ values: SIMD4<Float>, _ line: UnsafeMutablePointer<Float>, at x: Int, width: Int
) {
  if x + 4 <= width {
    store4(load4(line + x) + values, line + x)
  } else {
    for b in 0..<Swift.max(0, width - x) { line[x + b] += values[b] }
  }
}

/// The 4×4 transpose of rows a, b, c, d.
@inline(__always) private func transposed(
  _ a: SIMD4<Float>, _ b: SIMD4<Float>, _ c: SIMD4<Float>, _ d: SIMD4<Float>
) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>) {
  (
    SIMD4(a[0], b[0], c[0], d[0]), SIMD4(a[1], b[1], c[1], d[1]),
    SIMD4(a[2], b[2], c[2], d[2]), SIMD4(a[3], b[3], c[3], d[3])
  )
}

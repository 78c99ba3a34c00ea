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
      withUnsafeTemporaryAllocation(of: V.self, capacity: 9 + 12 + 16) { scratch in
        guard let taps = scratch.baseAddress else { return }
        // columns[3·row + col] = (G g)[row][col]; rows[4·row + col] = U[4·row + col].
        let (columns, rows) = (taps + 9, taps + 21)
        for group in groups {
          let first = group * 8
          let count = Swift.min(8, plane - first)
          for t in 0..<9 {
            var tap = V()
            for lane in 0..<count { tap[lane] = source.base[(first + lane) * 9 + t] }
            taps[t] = tap
          }
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

  /// V[ξ][c][t] = (Bᵀ d B)[ξ] for the 4×4 input patch d of every tile in tile rows
  /// `firstRow..<firstRow + rows` (tile rows counted across the batch).
  static func transformInput(
    _ x: UnsafePointer<Float>, _ g: ConvGeometry, firstRow: Int, rows: Int, ldv: Int,
    into v: UnsafeMutablePointer<Float>, options: ComputeOptions
  ) {
    let (c, h, w) = (g.c, g.h, g.w)
    let tilesHigh = (h + 1) / 2
    let tilesWide = (w + 1) / 2
    // Phase rows hold indices 0...tilesWide, padded to whole vectors.
    let span = (tilesWide + 1 + 7) / 8 * 8
    let width = 2 * span
    let (source, destination) = (SharedPointer(x), SharedMutablePointer(v))
    let plane = c * ldv
    // Each channel fills its own row of every V[ξ].
    parallelFor(c, grain: 1, options: options) { range in
      // phases[r·width + φ·span + j] = row r of the patch at x = 2j + φ − 1 (0 outside the
      // image); rowsT = Bᵀ d in the same layout. The extra vector lets the last loads run over.
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 8 * width + 8) { scratch in
        guard let p = scratch.baseAddress else { return }
        let t = p + 4 * width
        (t + 4 * width).initialize(repeating: 0, count: 8)
        for channel in range {
          for local in 0..<rows {
            let tileRow = firstRow + local
            let item = tileRow / tilesHigh
            let y0 = (tileRow % tilesHigh) * 2 - 1
            let image = source.base + (item * c + channel) * h * w
            for r in 0..<4 {
              let y = y0 + r
              if y >= 0 && y < h {
                splitPhases(image + y * w, count: w, into: p + r * width, span: span)
              } else {
                (p + r * width).initialize(repeating: 0, count: width)
              }
            }
            for q in stride(from: 0, to: width, by: 8) {
              let (d0, d1) = (load8(p + q), load8(p + width + q))
              let (d2, d3) = (load8(p + 2 * width + q), load8(p + 3 * width + q))
              store8(d0 - d2, t + q)
              store8(d1 + d2, t + width + q)
              store8(d2 - d1, t + 2 * width + q)
              store8(d1 - d3, t + 3 * width + q)
            }
            let base = destination.base + channel * ldv + local * tilesWide
            for i in 0..<4 {
              // e_k of tile tx is row i of Bᵀ d at patch column k: phase k mod 2, index tx + k/2.
              let e = t + i * width
              let out = base + i * 4 * plane
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
        }
      }
    }
  }

  /// out[2×2 tile] += Aᵀ M A for every tile of the chunk's tile rows and output channels
  /// `channels` (M holds those channels, from 0), dropping rows and columns past the image.
  static func transformOutput(
    _ m: UnsafePointer<Float>, _ g: ConvGeometry, channels: Range<Int>, firstRow: Int, rows: Int,
    ldm: Int, into out: UnsafeMutablePointer<Float>, options: ComputeOptions
  ) {
    let (o, h, w) = (g.o, g.h, g.w)
    let tilesHigh = (h + 1) / 2
    let tilesWide = (w + 1) / 2
    let span = (tilesWide + 7) / 8 * 8
    let (source, destination) = (SharedPointer(m), SharedMutablePointer(out))
    let plane = channels.count * ldm
    // Each output channel writes only its own plane.
    parallelFor(channels.count, grain: 1, options: options) { range in
      // s[(4a + j)·span + tx] = row a of Aᵀ M, column j, for every tile of the row.
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 8 * span) { scratch in
        guard let s = scratch.baseAddress else { return }
        for channel in range {
          for local in 0..<rows {
            let tileRow = firstRow + local
            let item = tileRow / tilesHigh
            let y0 = (tileRow % tilesHigh) * 2
            // Loads past the row's last tile read neighbouring (or padding) products whose
            // lanes are never stored.
            let products = source.base + channel * ldm + local * tilesWide
            for j in 0..<4 {
              for tx in stride(from: 0, to: tilesWide, by: 8) {
                let column = products + j * plane + tx
                let (m0, m1) = (load8(column), load8(column + 4 * plane))
                let (m2, m3) = (load8(column + 8 * plane), load8(column + 12 * plane))
                store8(m0 + m1 + m2, s + j * span + tx)
                store8(m1 - m2 - m3, s + (4 + j) * span + tx)
              }
            }
            let image = destination.base + (item * o + channels.lowerBound + channel) * h * w
            for a in 0..<Swift.min(2, h - y0) {
              let row = s + a * 4 * span
              let line = image + (y0 + a) * w
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
        }
      }
    }
  }
}

/// Splits one input row into two phase rows: phase φ, index j holds x = 2j + φ − 1, zero where
/// that is outside the row (each phase row has `span` entries).
private func splitPhases(
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

// 3×3, stride-1, pad-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray
// 2016, "Fast Algorithms for Convolutional Neural Networks"): each 2×2 output tile costs 16
// multiplies per channel pair instead of 36, as 16 independent GEMMs. The transformed weights
// are made per call (O·C·16 values, negligible next to the GEMMs), so no memory is held.
// Legend: n batch, c/o channels, h/w size, t tiles, ξ one of the 16 transform positions.
//
// Transforms (rows and columns alike):
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]   (input,  V = Bᵀ d B)
//   G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]            (weight, U = G g Gᵀ)
//   Aᵀ = [1 1 1 0; 0 1 −1 −1]                       (output, Y = Aᵀ M A)

/// Bytes of transformed-input scratch one chunk of tiles may use.
private let winogradChunkBudget = 16 << 20

/// Whether `conv2d` routes a convolution to the Winograd path.
/// Small images are left to im2col: there the per-call weight transform (o·c·16 values)
/// costs more than the multiplies it saves.
func winogradApplies(_ g: ConvGeometry) -> Bool {
  let tiles = g.n * ((g.h + 1) / 2) * ((g.w + 1) / 2)
  return g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.c >= 8 && g.o >= 8
    && tiles >= 2 * Swift.max(g.c, g.o)
}

/// out (`[n, o, h, w]`, pre-filled with the bias) += conv3×3(x, weight).
func winogradConv3x3(
  _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, _ g: ConvGeometry,
  into out: UnsafeMutablePointer<Float>, options: ComputeOptions
) {
  let (c, o, h, w) = (g.c, g.o, g.h, g.w)
  let tilesHigh = (h + 1) / 2
  let tilesWide = (w + 1) / 2
  let tilesPerImage = tilesHigh * tilesWide
  let totalTiles = g.n * tilesPerImage
  let chunk = Swift.max(1, Swift.min(totalTiles, winogradChunkBudget / (16 * 4 * Swift.max(c, o))))

  // U[ξ][o][c] = (G g Gᵀ)[ξ] for every output/input channel pair.
  // Scratch is fully written before it is read; skip zero-filling it.
  var transformedWeights = [Float](unsafeUninitializedCapacity: 16 * o * c) { $1 = 16 * o * c }
  var inputTiles = [Float](unsafeUninitializedCapacity: 16 * c * chunk) { $1 = 16 * c * chunk }
  var products = [Float](unsafeUninitializedCapacity: 16 * o * chunk) { $1 = 16 * o * chunk }
  transformedWeights.withUnsafeMutableBufferPointer { pu in
    inputTiles.withUnsafeMutableBufferPointer { pv in
      products.withUnsafeMutableBufferPointer { pm in
        guard let u = pu.baseAddress, let v = pv.baseAddress, let m = pm.baseAddress else { return }
        transformWeights(weight, o: o, c: c, into: u, options: options)
        var first = 0
        while first < totalTiles {
          let count = Swift.min(chunk, totalTiles - first)
          transformInput(
            x, g, firstTile: first, count: count, ldv: chunk, into: v, options: options)
          // The 16 products are independent; each writes its own M[ξ].
          let (us, vs, ms) = (SharedPointer(u), SharedPointer(v), SharedMutablePointer(m))
          parallelBLASTasks(16, options: options) { positions in
            for position in positions {
              sgemm(
                transposeA: false, transposeB: false, m: o, n: count, k: c,
                a: us.base + position * o * c, lda: c, b: vs.base + position * c * chunk,
                ldb: chunk,
                c: ms.base + position * o * chunk, ldc: chunk)
            }
          }
          transformOutput(
            m, g, firstTile: first, count: count, ldm: chunk, into: out, options: options)
          first += count
        }
      }
    }
  }
}

/// U = G g Gᵀ for each of the o·c 3×3 kernels, stored as 16 matrices [o][c].
private func transformWeights(
  _ weight: UnsafePointer<Float>, o: Int, c: Int, into u: UnsafeMutablePointer<Float>,
  options: ComputeOptions
) {
  let (source, destination) = (SharedPointer(weight), SharedMutablePointer(u))
  let plane = o * c
  // Each (o, c) pair writes its own 16 entries.
  parallelFor(plane, grain: 256, options: options) { range in
    for pair in range {
      let k = source.base + pair * 9
      let out = destination.base + pair
      // t = G g (4×3), column by column; then U = t Gᵀ, row by row (plain scalars: SIMD lane
      // access compiled to slow generic code here).
      var t = (
        Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
        Float(0), Float(0), Float(0), Float(0), Float(0), Float(0)
      )
      withUnsafeMutableBytes(of: &t) { raw in
        let tt = raw.bindMemory(to: Float.self)
        for col in 0..<3 {
          let (g0, g1, g2) = (k[col], k[3 + col], k[6 + col])
          tt[col] = g0
          tt[3 + col] = 0.5 * (g0 + g1 + g2)
          tt[6 + col] = 0.5 * (g0 - g1 + g2)
          tt[9 + col] = g2
        }
        for row in 0..<4 {
          let (a, b, c) = (tt[row * 3], tt[row * 3 + 1], tt[row * 3 + 2])
          out[(row * 4 + 0) * plane] = a
          out[(row * 4 + 1) * plane] = 0.5 * (a + b + c)
          out[(row * 4 + 2) * plane] = 0.5 * (a - b + c)
          out[(row * 4 + 3) * plane] = c
        }
      }
    }
  }
}

/// V[ξ][c][t] = (Bᵀ d B)[ξ] for the 4×4 input patch of each tile in the chunk.
private func transformInput(
  _ x: UnsafePointer<Float>, _ g: ConvGeometry, firstTile: Int, count: Int, ldv: Int,
  into v: UnsafeMutablePointer<Float>, options: ComputeOptions
) {
  let (c, h, w) = (g.c, g.h, g.w)
  let tilesWide = (w + 1) / 2
  let tilesPerImage = ((h + 1) / 2) * tilesWide
  let (source, destination) = (SharedPointer(x), SharedMutablePointer(v))
  let plane = c * ldv
  // Each channel fills its own row of every V[ξ].
  parallelFor(c, grain: 1, options: options) { range in
    for channel in range {
      for local in 0..<count {
        let tile = firstTile + local
        let item = tile / tilesPerImage
        let y0 = (tile % tilesPerImage) / tilesWide * 2 - 1
        let x0 = (tile % tilesWide) * 2 - 1
        let image = source.base + (item * c + channel) * h * w
        // d: the 4×4 patch with zero padding outside the image.
        func row(_ r: Int) -> SIMD4<Float> {
          let y = y0 + r
          guard y >= 0 && y < h else { return SIMD4() }
          let line = image + y * w
          if x0 >= 0 && x0 + 4 <= w {
            return SIMD4(line[x0], line[x0 + 1], line[x0 + 2], line[x0 + 3])
          }
          var result = SIMD4<Float>()
          for i in 0..<4 where x0 + i >= 0 && x0 + i < w { result[i] = line[x0 + i] }
          return result
        }
        let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3))
        let base = destination.base + channel * ldv + local
        // Rows: t = Bᵀ d; columns: V = t B, one row of t at a time.
        func store(_ r: Int, _ t: SIMD4<Float>) {
          base[(r * 4 + 0) * plane] = t[0] - t[2]
          base[(r * 4 + 1) * plane] = t[1] + t[2]
          base[(r * 4 + 2) * plane] = t[2] - t[1]
          base[(r * 4 + 3) * plane] = t[1] - t[3]
        }
        store(0, d0 - d2)
        store(1, d1 + d2)
        store(2, d2 - d1)
        store(3, d1 - d3)
      }
    }
  }
}

/// out[2×2 tile] += Aᵀ M A for each tile of the chunk, dropping rows/columns past the image.
private func transformOutput(
  _ m: UnsafePointer<Float>, _ g: ConvGeometry, firstTile: Int, count: Int, ldm: Int,
  into out: UnsafeMutablePointer<Float>, options: ComputeOptions
) {
  let (o, h, w) = (g.o, g.h, g.w)
  let tilesWide = (w + 1) / 2
  let tilesPerImage = ((h + 1) / 2) * tilesWide
  let (source, destination) = (SharedPointer(m), SharedMutablePointer(out))
  let plane = o * ldm
  // Each output channel writes only its own plane.
  parallelFor(o, grain: 1, options: options) { range in
    for channel in range {
      let rowBase = source.base + channel * ldm
      for local in 0..<count {
        let tile = firstTile + local
        let item = tile / tilesPerImage
        let y0 = (tile % tilesPerImage) / tilesWide * 2
        let x0 = (tile % tilesWide) * 2
        func row(_ r: Int) -> SIMD4<Float> {
          let p = rowBase + local + r * 4 * plane
          return SIMD4(p[0], p[plane], p[2 * plane], p[3 * plane])
        }
        let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3))
        // Rows: s = Aᵀ M (2×4); then columns: Y = s A (2×2).
        let image = destination.base + (item * o + channel) * h * w
        func add(_ r: Int, _ s: SIMD4<Float>) {
          guard y0 + r < h else { return }
          let line = image + (y0 + r) * w + x0
          line[0] += s[0] + s[1] + s[2]
          if x0 + 1 < w { line[1] += s[1] - s[2] - s[3] }
        }
        add(0, m0 + m1 + m2)
        add(1, m1 - m2 - m3)
      }
    }
  }
}

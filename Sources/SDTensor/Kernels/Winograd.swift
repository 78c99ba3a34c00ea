// 3×3, stride-1, pad-1 convolution by Winograd's minimal filtering (Lavin & Gray 2016, "Fast
// Algorithms for Convolutional Neural Networks"): the output is cut into m×m tiles, and each costs
// (m + 2)² multiplies per channel pair instead of 9·m², as (m + 2)² independent GEMMs. Two tile
// sizes: F(4×4, 3×3) (36 multiplies for 16 outputs, Winograd+F4.swift) on large images, and
// F(2×2, 3×3) (16 for 4, Winograd+F2.swift) on images with too few 4×4 tiles. The transformed
// weights are made per call ((m + 2)²·o·c values), so no memory is held: keeping them would
// multiply the memory of every 3×3 kernel by 4 (F4) or 16/9 (F2).
// Legend: n batch, c/o channels, h/w size, ξ one of the (m + 2)² transform positions, tx/ty tile
// column/row.

/// Bytes of transformed-input (and, separately, product) scratch one chunk of tile rows may use.
private let winogradChunkBudget = 16 << 20

/// Bytes of transformed weights one call may hold: larger layers transform their output channels
/// in blocks. Whole, the UNet's largest (F4 at 32×32 with 1280 channels, F2 at 16×16 with 2560
/// inputs) held 236 and 210 MB for the call; in blocks, `sd generate` on fp32 files (512×512)
/// peaks at 3.73 GB, against 3.85 before F2 and 3.86 with F2 unblocked.
private let winogradWeightBudget = 128 << 20

/// One Winograd algorithm F(m×m, 3×3): its tile and the arithmetic of its transforms (the loops
/// over channels and tile rows around them are `transformInput` and `transformOutput` below).
/// Layouts: U[ξ][o][c] (weights), V[ξ][c][t] (input tiles, t counting the tiles of a chunk row by
/// row), M[ξ][o][t] (products).
protocol WinogradTiling {
  /// The output tile side m; input patches are m + 2 wide.
  static var tile: Int { get }
  /// U[ξ][o][c] = (G g Gᵀ)[ξ] for each of the o·c 3×3 kernels g of `weight` (`[o, c, 3, 3]`).
  static func transformWeights(
    _ weight: UnsafePointer<Float>, o: Int, c: Int, into u: UnsafeMutablePointer<Float>,
    options: ComputeOptions)
  /// Splits one input row of `count` values into m phase rows of `span` entries: phase φ, index
  /// j holds x = m·j + φ − 1, zero where that is outside the row.
  static func splitPhases(
    _ input: UnsafePointer<Float>, count: Int, into line: UnsafeMutablePointer<Float>, span: Int)
  /// Bᵀ d B for the tiles of one tile row: `p` holds its m + 2 input rows, each split into m
  /// phases (row r at `r·m·span`), `t` is scratch for Bᵀ d in the same layout (one readable
  /// vector past it); position ξ of tile tx goes to `v[ξ·plane + tx]`.
  static func transformInputRow(
    _ p: UnsafePointer<Float>, rowsT t: UnsafeMutablePointer<Float>, span: Int, tilesWide: Int,
    into v: UnsafeMutablePointer<Float>, plane: Int)
  /// Aᵀ M A for the tiles of one tile row, added onto its first `rows` output rows (`image`,
  /// `image + w`, ...), dropping columns past w: M[ξ] of tile tx is `products[ξ·plane + tx]`
  /// (one vector of readable padding after the last), `s` scratch of m·(m + 2)·span floats.
  static func transformOutputRow(
    _ products: UnsafePointer<Float>, plane: Int, span: Int, tilesWide: Int,
    scratch s: UnsafeMutablePointer<Float>, into image: UnsafeMutablePointer<Float>, rows: Int,
    width w: Int)
}

extension WinogradTiling {
  /// Transform positions per tile, (m + 2)².
  static var positions: Int { (tile + 2) * (tile + 2) }
}

/// The Winograd algorithm `conv2d` routes a convolution to, or nil for im2col. Small images and
/// wide layers are left to im2col: there the per-call weight transform and the thin GEMMs cost
/// more than the multiplies saved. Tiles are counted per image, so an image gets the same path
/// whatever the batch it is in (a CFG batch of 2 or 3 prompts). The bounds were measured on the
/// SD 1.5 UNet's 3×3 convolutions at batch 2: F4 takes the 64×64 level (0.086 → 0.029 s at 320
/// channels) and the 32×32 level (64 tiles, 640–1920 channels: 0.086 → 0.034 s at 640; UNet step
/// 8.6 → 7.7 s). At the 16×16 level F4 has 16 tiles an image and needs 36/9 = 4 times the weights
/// in transformed form (up to 354 MB a call) for ~10 % less time; F2 has 64 tiles and needs 16/9.
func winogradTiling(_ g: ConvGeometry) -> (any WinogradTiling.Type)? {
  guard g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.c >= 8 && g.o >= 8 else {
    return nil
  }
  let widest = Swift.max(g.c, g.o)
  let f4Tiles = ((g.h + 3) / 4) * ((g.w + 3) / 4)
  if f4Tiles >= 64 && 32 * f4Tiles >= widest { return WinogradF4.self }
  let f2Tiles = ((g.h + 1) / 2) * ((g.w + 1) / 2)
  if f2Tiles >= 64 && 64 * f2Tiles >= widest { return WinogradF2.self }
  return nil
}

/// out (`[n, o, h, w]`, pre-filled with the bias) += conv3×3(x, weight) by `tiling`. Output
/// channels go in blocks whose transformed weights fit `winogradWeightBudget`, each block's U made
/// once; the input tiles are made once when one chunk holds them all, else once per block.
func winogradConv3x3<Tiling: WinogradTiling>(
  _ tiling: Tiling.Type, _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
  _ g: ConvGeometry, into out: UnsafeMutablePointer<Float>, options: ComputeOptions
) {
  let c = g.c
  let (side, positions) = (Tiling.tile, Tiling.positions)
  let weightBytes = positions * g.o * c * MemoryLayout<Float>.size
  let blockCount = Swift.max(1, (weightBytes + winogradWeightBudget - 1) / winogradWeightBudget)
  let blockChannels = (g.o + blockCount - 1) / blockCount
  let tilesWide = (g.w + side - 1) / side
  let tileRows = g.n * ((g.h + side - 1) / side)
  // Chunks of whole tile rows, as even as the budget allows.
  let budgetRows = Swift.max(
    1, winogradChunkBudget / (positions * 4 * Swift.max(c, blockChannels) * tilesWide))
  let chunkCount = (tileRows + budgetRows - 1) / budgetRows
  let rowsPerChunk = (tileRows + chunkCount - 1) / chunkCount
  let chunk = rowsPerChunk * tilesWide

  // Scratch is fully written before it is read; skip zero-filling it.
  let weightCount = positions * blockChannels * c
  var transformedWeights = [Float](unsafeUninitializedCapacity: weightCount) { $1 = weightCount }
  let tileCount = positions * c * chunk
  var inputTiles = [Float](unsafeUninitializedCapacity: tileCount) { $1 = tileCount }
  // One vector of padding, zeroed: the output transform's last loads run past the final row
  // (the lanes they read there are never stored).
  let productCount = positions * blockChannels * chunk
  var products = [Float](unsafeUninitializedCapacity: productCount + 8) { buffer, count in
    count = productCount + 8
    buffer.baseAddress?.advanced(by: productCount).initialize(repeating: 0, count: 8)
  }
  transformedWeights.withUnsafeMutableBufferPointer { pu in
    inputTiles.withUnsafeMutableBufferPointer { pv in
      products.withUnsafeMutableBufferPointer { pm in
        guard let u = pu.baseAddress, let v = pv.baseAddress, let m = pm.baseAddress else { return }
        for first in stride(from: 0, to: g.o, by: blockChannels) {
          let channels = first..<Swift.min(g.o, first + blockChannels)
          let o = channels.count
          Tiling.transformWeights(weight + first * c * 9, o: o, c: c, into: u, options: options)
          var firstRow = 0
          while firstRow < tileRows {
            let rows = Swift.min(rowsPerChunk, tileRows - firstRow)
            let count = rows * tilesWide
            if chunkCount > 1 || first == 0 {
              transformInput(
                Tiling.self, x, g, firstRow: firstRow, rows: rows, ldv: chunk, into: v,
                options: options)
            }
            // The products are independent; each writes its own M[ξ] = U[ξ]·V[ξ].
            let (us, vs, ms) = (SharedPointer(u), SharedPointer(v), SharedMutablePointer(m))
            parallelFor(positions, grain: 1, options: options) { range in
              for position in range {
                sgemm(
                  transposeA: false, transposeB: false, m: o, n: count, k: c,
                  a: us.base + position * o * c, lda: c, b: vs.base + position * c * chunk,
                  ldb: chunk, c: ms.base + position * o * chunk, ldc: chunk)
              }
            }
            transformOutput(
              Tiling.self, m, g, channels: channels, firstRow: firstRow, rows: rows, ldm: chunk,
              into: out, options: options)
            firstRow += rows
          }
        }
      }
    }
  }
}

/// V[ξ][c][t] = (Bᵀ d B)[ξ] for the (m + 2)×(m + 2) input patch d of every tile in tile rows
/// `firstRow..<firstRow + rows` (tile rows counted across the batch). A tile row's input rows
/// are split into m phases (x mod m) first, so that every step of the transform is a contiguous
/// loop over the row's tiles.
private func transformInput<Tiling: WinogradTiling>(
  _ tiling: Tiling.Type, _ x: UnsafePointer<Float>, _ g: ConvGeometry, firstRow: Int, rows: Int,
  ldv: Int, into v: UnsafeMutablePointer<Float>, options: ComputeOptions
) {
  let (c, h, w, side) = (g.c, g.h, g.w, Tiling.tile)
  let patchRows = side + 2
  let tilesHigh = (h + side - 1) / side
  let tilesWide = (w + side - 1) / side
  // Phase rows hold indices 0...tilesWide, padded to whole vectors.
  let span = (tilesWide + 1 + 7) / 8 * 8
  let width = side * span
  let (source, destination) = (SharedPointer(x), SharedMutablePointer(v))
  let plane = c * ldv
  // Each channel fills its own row of every V[ξ].
  parallelFor(c, grain: 1, options: options) { range in
    // The patch's phase rows, then Bᵀ d in the same layout and one zeroed vector past it.
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * patchRows * width + 8) { scratch in
      guard let patch = scratch.baseAddress else { return }
      let rowsT = patch + patchRows * width
      (rowsT + patchRows * width).initialize(repeating: 0, count: 8)
      for channel in range {
        for local in 0..<rows {
          let tileRow = firstRow + local
          let item = tileRow / tilesHigh
          let y0 = (tileRow % tilesHigh) * side - 1
          let image = source.base + (item * c + channel) * h * w
          for r in 0..<patchRows {
            let y = y0 + r
            if y >= 0 && y < h {
              Tiling.splitPhases(image + y * w, count: w, into: patch + r * width, span: span)
            } else {
              (patch + r * width).initialize(repeating: 0, count: width)
            }
          }
          Tiling.transformInputRow(
            patch, rowsT: rowsT, span: span, tilesWide: tilesWide,
            into: destination.base + channel * ldv + local * tilesWide, plane: plane)
        }
      }
    }
  }
}

/// out[tile] += Aᵀ M A for every tile of the chunk's tile rows and output channels `channels`
/// (M holds those channels, from 0), dropping rows and columns past the image.
private func transformOutput<Tiling: WinogradTiling>(
  _ tiling: Tiling.Type, _ m: UnsafePointer<Float>, _ g: ConvGeometry, channels: Range<Int>,
  firstRow: Int, rows: Int, ldm: Int, into out: UnsafeMutablePointer<Float>,
  options: ComputeOptions
) {
  let (o, h, w, side) = (g.o, g.h, g.w, Tiling.tile)
  let tilesHigh = (h + side - 1) / side
  let tilesWide = (w + side - 1) / side
  let span = (tilesWide + 7) / 8 * 8
  let (source, destination) = (SharedPointer(m), SharedMutablePointer(out))
  let plane = channels.count * ldm
  // Each output channel writes only its own plane.
  parallelFor(channels.count, grain: 1, options: options) { range in
    withUnsafeTemporaryAllocation(of: Float.self, capacity: side * (side + 2) * span) { scratch in
      guard let s = scratch.baseAddress else { return }
      for channel in range {
        for local in 0..<rows {
          let tileRow = firstRow + local
          let item = tileRow / tilesHigh
          let y0 = (tileRow % tilesHigh) * side
          let image = destination.base + (item * o + channels.lowerBound + channel) * h * w
          // Loads past the row's last tile read neighbouring (or padding) products whose lanes
          // are never stored.
          Tiling.transformOutputRow(
            source.base + channel * ldm + local * tilesWide, plane: plane, span: span,
            tilesWide: tilesWide, scratch: s, into: image + y0 * w, rows: Swift.min(side, h - y0),
            width: w)
        }
      }
    }
  }
}

// Vector helpers of the transforms.

/// The nine taps of the eight 3×3 kernels at `kernels` (`[8, 9]`; only the first `count` are
/// read, the others are zeros), one kernel per lane, into `scratch[t]` = tap t of each kernel.
/// `scratch` holds 18 vectors: the last nine are room for a last group of fewer than eight.
/// The lanes are filled by constant index, in registers: filled by a variable index they went
/// through the stack, and the reload of each tap waited on the store before it (store
/// forwarding fails), which made the weight transform 30 % of a 640-channel 32×32 convolution.
@inline(__always) func gatherTaps(
  _ kernels: UnsafePointer<Float>, count: Int, into scratch: UnsafeMutablePointer<SIMD8<Float>>
) {
  var g = kernels
  if count < 8 {
    let padding = UnsafeMutableRawPointer(scratch + 9).bindMemory(to: Float.self, capacity: 72)
    padding.initialize(repeating: 0, count: 72)
    padding.update(from: kernels, count: count * 9)
    g = UnsafePointer(padding)
  }
  for t in 0..<9 {
    scratch[t] = SIMD8(
      g[t], g[9 + t], g[18 + t], g[27 + t], g[36 + t], g[45 + t], g[54 + t], g[63 + t])
  }
}

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
  UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) func load4(_ p: UnsafePointer<Float>) -> SIMD4<Float> {
  UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
}

@inline(__always) func store8(_ value: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
  UnsafeMutableRawPointer(p).storeBytes(of: value, as: SIMD8<Float>.self)
}

/// Stores the first `valid` lanes (all eight when `valid` ≥ 8).
@inline(__always) func store8(
  _ value: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, valid: Int
) {
  if valid >= 8 {
    store8(value, p)
  } else {
    for lane in 0..<valid { p[lane] = value[lane] }
  }
}

@inline(__always) func store4(_ value: SIMD4<Float>, _ p: UnsafeMutablePointer<Float>) {
  UnsafeMutableRawPointer(p).storeBytes(of: value, as: SIMD4<Float>.self)
}

// Single-precision GEMM in Swift SIMD, C = α·op(A)·op(B) + β·C: operands packed into cache
// blocks in the BLIS loop order around a register-tile micro-kernel (GEMMMicroKernel.swift).
// Legend: m, n, k are the GEMM sizes; mr × nr the register tile; kc, mc, nc the cache blocks.
//
// Why our own and not OpenBLAS's: OpenBLAS rounds differently with its thread count and with the
// kernel set it picks for the CPU, so the same request gave different bytes in different
// processes (issue 17), and its kernels do not use the 512-bit datapaths of newer CPUs
// (0.3.21 runs its AVX2 set there). Here every output element is one fixed sequence of FMAs.

#if SD_AVX512 || SD_AVX2
  import CPrefetch

  /// The depth block: k is consumed kc values at a time. An output element is the sum of its
  /// blocks' partial dot products, each an FMA chain started from 0, added to C in order. Its bits
  /// therefore depend on kc alone: not on the ISA, the register tile or how work is split.
  let gemmDepthBlock = 256
  /// Rows of A a B panel meets before the next panel is taken (their depth block stays in L2).
  let gemmRowBlock = gemmTileRows * 16
  /// Columns of B packed at a time (a kc × nc block: 2 MB, in L3).
  let gemmColumnBlock = 2048

  /// `gemm` on one thread. `beta == 0` means C is not read (it may hold anything); `bias`, when
  /// given, is added to every row of C (n values).
  func gemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?
  ) {
    let product = GEMMOperands(
      transposeA: transposeA, transposeB: transposeB, n: n, k: k, alpha: alpha, a: a, lda: lda,
      b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, bias: bias)
    let packedB = UnsafeMutablePointer<Float>.allocate(capacity: product.packedBlockCount)
    defer { packedB.deallocate() }
    product.forEachBlock { block in
      product.pack(block, into: packedB)
      product.multiply(block, packedB: packedB, rows: 0..<m)
    }
  }

  /// Floats of packed op(B) up to which `gemmRowsInParallel` packs all of it at once (16 MB).
  private let gemmSharedPackingLimit = 4 << 20

  /// Whether `gemmRowsInParallel` takes a product with this op(B): its packing fits the limit.
  func gemmPacksBOnce(n: Int, k: Int) -> Bool {
    roundUp(n, gemmTileColumns) * k <= gemmSharedPackingLimit
  }

  /// `gemm` with its rows cut into parts for up to `options.threadCount` threads, op(B) packed
  /// once for all of them first (at most `gemmSharedPackingLimit` floats of it): when each part
  /// of the rows packed all of B for itself, a 2048 × 640 · 640 × 640 product (the 32×32
  /// level's linear layers) packed B 8 times. Each output element is computed as in `gemm`,
  /// so the bits are the same.
  func gemmRowsInParallel(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, options: ComputeOptions
  ) {
    let product = GEMMOperands(
      transposeA: transposeA, transposeB: transposeB, n: n, k: k, alpha: alpha, a: a, lda: lda,
      b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, bias: bias)
    precondition(gemmPacksBOnce(n: n, k: k), "gemmRowsInParallel: B too large")
    let nr = gemmTileColumns
    let packedB = UnsafeMutablePointer<Float>.allocate(capacity: roundUp(n, nr) * k)
    defer { packedB.deallocate() }
    let shared = SharedMutablePointer(packedB)
    // Packing in groups of 8 panels (a column block holds whole groups), every depth block.
    let groupColumns = 8 * nr
    parallelFor((n + groupColumns - 1) / groupColumns, grain: 1, options: options) { groups in
      let first = groups.lowerBound * groupColumns
      let width = Swift.min(n, groups.upperBound * groupColumns) - first
      let column = first / product.columnBlock * product.columnBlock
      product.forEachBlock { block in
        guard block.column == column else { return }
        product.pack(
          GEMMBlock(column: first, width: width, depthRange: block.depthRange),
          into: shared.base + product.offsetInWholePacking(block) + (first - column)
            * block.depthRange.count)
      }
    }
    // Row parts of whole row blocks, writing disjoint rows of C.
    parallelFor((m + gemmRowBlock - 1) / gemmRowBlock, grain: 1, options: options) { parts in
      let rows = parts.lowerBound * gemmRowBlock..<Swift.min(m, parts.upperBound * gemmRowBlock)
      product.forEachBlock { block in
        product.multiply(
          block, packedB: shared.base + product.offsetInWholePacking(block), rows: rows)
      }
    }
  }

  /// A kc × nc block of op(B): depth `depthRange`, columns `column..<column + width`.
  struct GEMMBlock {
    let column: Int
    let width: Int
    let depthRange: Range<Int>
  }

  /// The operands of one product, and its loops around the micro-kernel: blocks of op(B) are
  /// packed (`pack`), then met by the rows of A (`multiply`).
  struct GEMMOperands: @unchecked Sendable {
    let transposeA: Bool, transposeB: Bool
    let n: Int, k: Int
    let alpha: Float
    let a: UnsafePointer<Float>, lda: Int
    let b: UnsafePointer<Float>, ldb: Int
    let beta: Float
    let c: UnsafeMutablePointer<Float>, ldc: Int
    /// Added to every row of C with the first depth block (n values), or nil.
    let bias: UnsafePointer<Float>?

    var depthBlock: Int { Swift.min(k, gemmDepthBlock) }
    var columnBlock: Int { Swift.min(roundUp(n, gemmTileColumns), gemmColumnBlock) }
    /// Floats of one packed block of op(B).
    var packedBlockCount: Int { depthBlock * columnBlock }

    /// Calls `body` with each block of op(B) in order: columns outer, depth inner (the order in
    /// which every element's depth blocks are added).
    func forEachBlock(_ body: (GEMMBlock) -> Void) {
      let (kcMax, ncMax) = (depthBlock, columnBlock)
      for jc in stride(from: 0, to: n, by: ncMax) {
        for pc in stride(from: 0, to: k, by: kcMax) {
          body(
            GEMMBlock(
              column: jc, width: Swift.min(ncMax, n - jc),
              depthRange: pc..<Swift.min(k, pc + kcMax)))
        }
      }
    }

    /// Where `block` starts when all of op(B) is packed at once, blocks in `forEachBlock`
    /// order: block (jc, pc) of width nc (padded to whole panels) at jc·k + pc·nc.
    func offsetInWholePacking(_ block: GEMMBlock) -> Int {
      block.column * k + block.depthRange.lowerBound * roundUp(block.width, gemmTileColumns)
    }

    func pack(_ block: GEMMBlock, into packed: UnsafeMutablePointer<Float>) {
      packB(
        transposed: transposeB, b, ldb: ldb, row: block.depthRange.lowerBound,
        column: block.column, depth: block.depthRange.count, width: block.width, into: packed)
    }

    /// C rows `rows` (their columns of `block`) += op(A) rows · packed block.
    func multiply(_ block: GEMMBlock, packedB: UnsafePointer<Float>, rows: Range<Int>) {
      let (mr, nr) = (gemmTileRows, gemmTileColumns)
      let (pc, kc, jc, nc) = (
        block.depthRange.lowerBound, block.depthRange.count, block.column, block.width
      )
      // op(A)(r, p) = a[r·rowStride + p·depthStride]: A is not packed (see GEMMMicroKernel.swift).
      let (rowStride, depthStride) = transposeA ? (1, lda) : (lda, 1)
      // The last rows when their count is not a multiple of mr, zero-padded to a whole panel,
      // and the partial tiles of C at the edges, computed whole and then merged element by
      // element.
      let edgeA = UnsafeMutablePointer<Float>.allocate(capacity: kc * mr)
      let edgeC = UnsafeMutablePointer<Float>.allocate(capacity: mr * nr)
      defer {
        edgeA.deallocate()
        edgeC.deallocate()
      }
      let fullRows = rows.lowerBound + rows.count / mr * mr
      if fullRows < rows.upperBound {
        for p in 0..<kc {
          for r in 0..<mr {
            edgeA[p * mr + r] =
              fullRows + r < rows.upperBound
              ? a[(fullRows + r) * rowStride + (pc + p) * depthStride] : 0
          }
        }
      }
      // Only the first depth block sees β and the bias; later ones add onto what it wrote.
      let blockBeta: Float = pc == 0 ? beta : 1
      let blockBias = pc == 0 ? bias.map { $0 + jc } : nil
      for ic in stride(from: rows.lowerBound, to: rows.upperBound, by: gemmRowBlock) {
        let mc = Swift.min(gemmRowBlock, rows.upperBound - ic)
        for jr in stride(from: 0, to: nc, by: nr) {
          let columns = Swift.min(nr, nc - jr)
          let panelB = packedB + jr * kc
          for ir in stride(from: ic, to: ic + mc, by: mr) {
            let tileRows = Swift.min(mr, rows.upperBound - ir)
            let tile = c + ir * ldc + jc + jr
            // The next tile: the one below, or the first of the next panel.
            let (nextRow, nextColumn) = ir + mr < ic + mc ? (ir + mr, jr) : (ic, jr + nr)
            prefetchNextTile(
              of: c + jc, row: nextRow, column: nextColumn, rows: rows, columns: nc, ldc: ldc)
            let (panelA, panelRowStride, panelDepthStride) =
              tileRows == mr
              ? (a + ir * rowStride + pc * depthStride, rowStride, depthStride)
              : (UnsafePointer(edgeA), 1, mr)
            if tileRows == mr && columns == nr {
              if let blockBias {
                var store = BiasedTileStore(
                  tile, ldc: ldc, alpha: alpha, beta: blockBeta, bias: blockBias + jr)
                gemmMicroKernel(
                  depth: kc, a: panelA, rowStride: panelRowStride, depthStride: panelDepthStride,
                  b: panelB, writer: &store)
              } else {
                gemmMicroKernel(
                  depth: kc, a: panelA, rowStride: panelRowStride, depthStride: panelDepthStride,
                  b: panelB, c: tile, ldc: ldc, alpha: alpha, beta: blockBeta)
              }
              continue
            }
            gemmMicroKernel(
              depth: kc, a: panelA, rowStride: panelRowStride, depthStride: panelDepthStride,
              b: panelB, c: edgeC, ldc: nr, alpha: 1, beta: 0)
            // The same roundings as the micro-kernel's store, so edges match the body.
            for row in 0..<tileRows {
              for column in 0..<columns {
                let sum = edgeC[row * nr + column] * alpha
                let out = tile + row * ldc + column
                let value = blockBeta == 0 ? sum : out.pointee * blockBeta + sum
                out.pointee = blockBias.map { value + $0[jr + column] } ?? value
              }
            }
          }
        }
      }
    }
  }

  /// Asks for the rows of the C tile at (`row`, `column`) of a C block `columns` wide to be
  /// brought into cache for writing while the tile before it is computed; only rows inside `rows`
  /// (those this call owns). Tiles follow each other down a panel, `gemmTileRows` rows of C apart:
  /// with rows thousands of floats long, that stride defeats the hardware prefetcher, and each
  /// tile's store waited for its rows to come from L3 or memory. Measured on a shared Zen 3 host,
  /// ten rounds, the order alternating: on two threads the median of the paired times fell 6–21 %
  /// at each of the UNet's ten largest shapes, best of ten 2048×640·640×5120 156 → 165 GFLOP/s,
  /// 512×1280·1280×10240 158 → 170 (busy neighbours' cache traffic hurts less); on one thread
  /// best of eight within ±6 %.
  @inline(__always)
  private func prefetchNextTile(
    of c: UnsafeMutablePointer<Float>, row: Int, column: Int, rows: Range<Int>, columns: Int,
    ldc: Int
  ) {
    guard column < columns else { return }
    let width = Swift.min(gemmTileColumns, columns - column)
    for r in row..<Swift.min(row + gemmTileRows, rows.upperBound) {
      let line = c + r * ldc + column
      // Every cache line of the tile row: one per 16 floats, and the last (rows are unaligned).
      for offset in stride(from: 0, to: width, by: 16) { sd_prefetch_for_write(line + offset) }
      sd_prefetch_for_write(line + width - 1)
    }
  }

  /// Packs depth `row..<row+depth`, columns `column..<column+width` of op(B) into micro-panels of
  /// nr columns: panel j holds element (p, c) at `j·nr·depth + p·nr + c`; missing columns are zeros.
  private func packB(
    transposed: Bool, _ b: UnsafePointer<Float>, ldb: Int, row: Int, column: Int, depth: Int,
    width: Int, into packed: UnsafeMutablePointer<Float>
  ) {
    let nr = gemmTileColumns
    for panel in stride(from: 0, to: width, by: nr) {
      let columns = Swift.min(nr, width - panel)
      let out = packed + panel * depth
      if transposed {
        // op(B)(p, c) = b[c][p] (a linear layer's [out, in] weight): read rows, write columns,
        // 8×8 blocks transposed in registers. Element by element, the packing of 512×1280 ·
        // 1280×10240 (the 16×16 level's GEGLU projection) was 11 % of the product.
        let source = b + (column + panel) * ldb + row
        let (wholeColumns, wholeDepth) = (columns / 8 * 8, depth / 8 * 8)
        for col in stride(from: 0, to: wholeColumns, by: 8) {
          for p in stride(from: 0, to: wholeDepth, by: 8) {
            transpose8x8(source + col * ldb + p, ldb, out + p * nr + col, nr)
          }
          for p in wholeDepth..<depth {
            for c in col..<col + 8 { out[p * nr + c] = source[c * ldb + p] }
          }
        }
        for col in wholeColumns..<columns {
          for p in 0..<depth { out[p * nr + col] = source[col * ldb + p] }
        }
        for col in columns..<nr { for p in 0..<depth { out[p * nr + col] = 0 } }
      } else {
        for p in 0..<depth {
          let source = b + (row + p) * ldb + column + panel
          let target = out + p * nr
          for col in 0..<columns { target[col] = source[col] }
          for col in columns..<nr { target[col] = 0 }
        }
      }
    }
  }

  private func roundUp(_ value: Int, _ multiple: Int) -> Int {
    (value + multiple - 1) / multiple * multiple
  }

#endif

// Single-precision GEMM in Swift SIMD, C = α·op(A)·op(B) + β·C: operands packed into cache
// blocks in the BLIS loop order around a register-tile micro-kernel (GEMMMicroKernel.swift).
// Legend: m, n, k are the GEMM sizes; mr × nr the register tile; kc, mc, nc the cache blocks.
//
// Why our own and not OpenBLAS's: OpenBLAS rounds differently with its thread count and with the
// kernel set it picks for the CPU, so the same request gave different bytes in different
// processes (issue 17), and its kernels do not use the 512-bit datapaths of newer CPUs
// (0.3.21 runs its AVX2 set there). Here every output element is one fixed sequence of FMAs.

#if SD_AVX512 || SD_AVX2

  /// The depth block: k is consumed kc values at a time. An output element is the sum of its
  /// blocks' partial dot products, each an FMA chain started from 0, added to C in order. Its bits
  /// therefore depend on kc alone: not on the ISA, the register tile or how work is split.
  let gemmDepthBlock = 256
  /// Rows of A a B panel meets before the next panel is taken (their depth block stays in L2).
  let gemmRowBlock = gemmTileRows * 16
  /// Columns of B packed at a time (a kc × nc block: 2 MB, in L3).
  let gemmColumnBlock = 2048

  /// `gemm` on one thread. `beta == 0` means C is not read (it may hold anything).
  func gemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    let (mr, nr) = (gemmTileRows, gemmTileColumns)
    let kcMax = Swift.min(k, gemmDepthBlock)
    let ncMax = Swift.min(roundUp(n, nr), gemmColumnBlock)
    // op(A)(r, p) = a[r·rowStride + p·depthStride]: A is not packed (see GEMMMicroKernel.swift).
    let (rowStride, depthStride) = transposeA ? (1, lda) : (lda, 1)
    let packedB = UnsafeMutablePointer<Float>.allocate(capacity: kcMax * ncMax)
    // The last rows of A when m is not a multiple of mr, zero-padded to a whole panel, and the
    // partial tiles of C at the edges, computed whole and then merged element by element.
    let edgeA = UnsafeMutablePointer<Float>.allocate(capacity: kcMax * mr)
    let edgeC = UnsafeMutablePointer<Float>.allocate(capacity: mr * nr)
    defer {
      packedB.deallocate()
      edgeA.deallocate()
      edgeC.deallocate()
    }
    let fullRows = m / mr * mr
    for jc in stride(from: 0, to: n, by: ncMax) {
      let nc = Swift.min(ncMax, n - jc)
      for pc in stride(from: 0, to: k, by: kcMax) {
        let kc = Swift.min(kcMax, k - pc)
        packB(
          transposed: transposeB, b, ldb: ldb, row: pc, column: jc, depth: kc, width: nc,
          into: packedB)
        if fullRows < m {
          for p in 0..<kc {
            for r in 0..<mr {
              edgeA[p * mr + r] =
                fullRows + r < m ? a[(fullRows + r) * rowStride + (pc + p) * depthStride] : 0
            }
          }
        }
        // Only the first depth block sees β; later ones add onto what it wrote.
        let blockBeta: Float = pc == 0 ? beta : 1
        for ic in stride(from: 0, to: m, by: gemmRowBlock) {
          let mc = Swift.min(gemmRowBlock, m - ic)
          for jr in stride(from: 0, to: nc, by: nr) {
            let columns = Swift.min(nr, nc - jr)
            let panelB = packedB + jr * kc
            for ir in stride(from: ic, to: ic + mc, by: mr) {
              let rows = Swift.min(mr, m - ir)
              let tile = c + ir * ldc + jc + jr
              let (panelA, panelRowStride, panelDepthStride) =
                rows == mr
                ? (a + ir * rowStride + pc * depthStride, rowStride, depthStride)
                : (UnsafePointer(edgeA), 1, mr)
              if rows == mr && columns == nr {
                gemmMicroKernel(
                  depth: kc, a: panelA, rowStride: panelRowStride, depthStride: panelDepthStride,
                  b: panelB, c: tile, ldc: ldc, alpha: alpha, beta: blockBeta)
                continue
              }
              gemmMicroKernel(
                depth: kc, a: panelA, rowStride: panelRowStride, depthStride: panelDepthStride,
                b: panelB, c: edgeC, ldc: nr, alpha: 1, beta: 0)
              // The same two roundings as the micro-kernel's store, so edges match the body.
              for row in 0..<rows {
                for column in 0..<columns {
                  let sum = edgeC[row * nr + column] * alpha
                  let out = tile + row * ldc + column
                  out.pointee = blockBeta == 0 ? sum : out.pointee * blockBeta + sum
                }
              }
            }
          }
        }
      }
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
        // op(B)(p, c) = b[c][p] (a linear layer's [out, in] weight): read rows, write columns.
        for col in 0..<columns {
          let source = b + (column + panel + col) * ldb + row
          for p in 0..<depth { out[p * nr + col] = source[p] }
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

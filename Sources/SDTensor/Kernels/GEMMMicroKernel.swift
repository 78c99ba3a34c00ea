// The GEMM register tile for the build's vector ISA: C[mr × nr] (β·C +) α·Σₚ A[·, p]·B[p, ·] over
// one packed depth block, every product an FMA into an accumulator that stays in a register.
// Package.swift defines SD_AVX512 or SD_AVX2 together with the matching `-target-cpu`.
// Legend: kc depth, mr × nr tile. A is read where it lies, element (r, p) at `a[r·rowStride +
// p·depthStride]` (its rows, its transpose's columns, or a packed edge panel alike: measured 212
// against 219 GFLOP/s for a packed panel, so packing A would not pay for itself); the B panel is
// packed `[kc][nr]` by GEMM.swift. The accumulated rows go to a `TileWriter`: GEMM stores them
// into C, the fused attention keeps its softmax statistics on the way (FlashAttention.swift).

#if SD_AVX512

  /// 12 rows × 32 columns: 24 of the 32 zmm registers accumulate, 2 hold the B row, and each A
  /// value is broadcast from memory into the FMA. Measured on a Zen 5 core: 202 GFLOP/s, the FMA
  /// peak (2 × 16 lanes × 2 flops per cycle).
  let gemmTileRows = 12
  let gemmTileColumns = 32

  /// The vector of a tile row's halves.
  typealias TileVector = SIMD16<Float>
  /// Rows of the short tile, which a writer whose `rows` is this gets: 16 accumulators, still
  /// enough to hide the FMA latency. Every head size of SD (40, 64, 80, 160) is a multiple of it,
  /// so attention's P·V has no padded rows.
  let gemmShortTileRows = 8

  /// Σₚ A[r, p]·B[p, ·] for the tile's rows r (`Writer.rows` of them) over depth `kc`, handed
  /// to `writer` row by row.
  @inline(__always)
  func gemmMicroKernel<Writer: TileWriter>(
    depth kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, depthStride ds: Int,
    b: UnsafePointer<Float>, writer: inout Writer
  ) {
    typealias V = TileVector
    var (c00, c01, c10, c11, c20, c21) = (V(), V(), V(), V(), V(), V())
    var (c30, c31, c40, c41, c50, c51) = (V(), V(), V(), V(), V(), V())
    var (c60, c61, c70, c71, c80, c81) = (V(), V(), V(), V(), V(), V())
    var (c90, c91, ca0, ca1, cb0, cb1) = (V(), V(), V(), V(), V(), V())
    let rowsB = UnsafeRawPointer(b)
    var pa = a
    for p in 0..<kc {
      let b0 = rowsB.loadUnaligned(fromByteOffset: p * 128, as: V.self)
      let b1 = rowsB.loadUnaligned(fromByteOffset: p * 128 + 64, as: V.self)
      var s = V(repeating: pa[0])
      c00.addProduct(s, b0)
      c01.addProduct(s, b1)
      s = V(repeating: pa[1 * rs])
      c10.addProduct(s, b0)
      c11.addProduct(s, b1)
      s = V(repeating: pa[2 * rs])
      c20.addProduct(s, b0)
      c21.addProduct(s, b1)
      s = V(repeating: pa[3 * rs])
      c30.addProduct(s, b0)
      c31.addProduct(s, b1)
      s = V(repeating: pa[4 * rs])
      c40.addProduct(s, b0)
      c41.addProduct(s, b1)
      s = V(repeating: pa[5 * rs])
      c50.addProduct(s, b0)
      c51.addProduct(s, b1)
      s = V(repeating: pa[6 * rs])
      c60.addProduct(s, b0)
      c61.addProduct(s, b1)
      s = V(repeating: pa[7 * rs])
      c70.addProduct(s, b0)
      c71.addProduct(s, b1)
      if Writer.rows > gemmShortTileRows {
        s = V(repeating: pa[8 * rs])
        c80.addProduct(s, b0)
        c81.addProduct(s, b1)
        s = V(repeating: pa[9 * rs])
        c90.addProduct(s, b0)
        c91.addProduct(s, b1)
        s = V(repeating: pa[10 * rs])
        ca0.addProduct(s, b0)
        ca1.addProduct(s, b1)
        s = V(repeating: pa[11 * rs])
        cb0.addProduct(s, b0)
        cb1.addProduct(s, b1)
      }
      pa += ds
    }
    writer.row(0, c00, c01)
    writer.row(1, c10, c11)
    writer.row(2, c20, c21)
    writer.row(3, c30, c31)
    writer.row(4, c40, c41)
    writer.row(5, c50, c51)
    writer.row(6, c60, c61)
    writer.row(7, c70, c71)
    if Writer.rows > gemmShortTileRows {
      writer.row(8, c80, c81)
      writer.row(9, c90, c91)
      writer.row(10, ca0, ca1)
      writer.row(11, cb0, cb1)
    }
  }

#elseif SD_AVX2

  /// 6 rows × 16 columns: 12 of the 16 ymm registers accumulate, 2 hold the B row, and each A
  /// value is broadcast into the FMA (measured: 103 GFLOP/s on a Zen 5 core with 256-bit vectors,
  /// its FMA peak for that width).
  let gemmTileRows = 6
  let gemmTileColumns = 16

  /// The vector of a tile row's halves.
  typealias TileVector = SIMD8<Float>
  /// Rows of the short tile, which a writer whose `rows` is this gets: 8 accumulators. Every
  /// head size of SD (40, 64, 80, 160) is a multiple of it, so attention's P·V has no padded rows.
  let gemmShortTileRows = 4

  /// Σₚ A[r, p]·B[p, ·] for the tile's rows r (`Writer.rows` of them) over depth `kc`, handed
  /// to `writer` row by row.
  @inline(__always)
  func gemmMicroKernel<Writer: TileWriter>(
    depth kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, depthStride ds: Int,
    b: UnsafePointer<Float>, writer: inout Writer
  ) {
    typealias V = TileVector
    var (c00, c01, c10, c11, c20, c21) = (V(), V(), V(), V(), V(), V())
    var (c30, c31, c40, c41, c50, c51) = (V(), V(), V(), V(), V(), V())
    let rowsB = UnsafeRawPointer(b)
    // One pointer per row, each advanced on its own. Addressed from one pointer, the rows were
    // reached through a chain of six dependent adds per depth step, six cycles, as long as the
    // step's twelve FMAs take on two FMA pipes, so the loop ran at the chain's pace (measured on
    // a Zen 3 host, two threads, the UNet's ten largest GEMM shapes: 1–6 % faster each).
    var (a0, a1, a2, a3) = (a, a + rs, a + 2 * rs, a + 3 * rs)
    let tall = Writer.rows > gemmShortTileRows
    var (a4, a5) = tall ? (a + 4 * rs, a + 5 * rs) : (a, a)
    for p in 0..<kc {
      let b0 = rowsB.loadUnaligned(fromByteOffset: p * 64, as: V.self)
      let b1 = rowsB.loadUnaligned(fromByteOffset: p * 64 + 32, as: V.self)
      var s = V(repeating: a0.pointee)
      c00.addProduct(s, b0)
      c01.addProduct(s, b1)
      s = V(repeating: a1.pointee)
      c10.addProduct(s, b0)
      c11.addProduct(s, b1)
      s = V(repeating: a2.pointee)
      c20.addProduct(s, b0)
      c21.addProduct(s, b1)
      s = V(repeating: a3.pointee)
      c30.addProduct(s, b0)
      c31.addProduct(s, b1)
      (a0, a1, a2, a3) = (a0 + ds, a1 + ds, a2 + ds, a3 + ds)
      if tall {
        s = V(repeating: a4.pointee)
        c40.addProduct(s, b0)
        c41.addProduct(s, b1)
        s = V(repeating: a5.pointee)
        c50.addProduct(s, b0)
        c51.addProduct(s, b1)
        (a4, a5) = (a4 + ds, a5 + ds)
      }
    }
    writer.row(0, c00, c01)
    writer.row(1, c10, c11)
    writer.row(2, c20, c21)
    writer.row(3, c30, c31)
    if Writer.rows > gemmShortTileRows {
      writer.row(4, c40, c41)
      writer.row(5, c50, c51)
    }
  }

#endif

#if SD_AVX512 || SD_AVX2

  /// Where a micro-kernel's accumulated rows go: `row(index, left, right)` is called once per
  /// tile row, after the depth loop, with the row's two vectors.
  protocol TileWriter {
    /// Rows of the tile: `gemmTileRows`, or `gemmShortTileRows` for the short tile.
    static var rows: Int { get }
    mutating func row(_ index: Int, _ left: TileVector, _ right: TileVector)
  }

  /// The micro-kernel storing into C: `α·acc` when β is 0 (C is not read), else `β·C + α·acc`.
  @inline(__always)
  func gemmMicroKernel(
    depth kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, depthStride ds: Int,
    b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float
  ) {
    var writer = TileStore(c, ldc: ldc, alpha: alpha, beta: beta)
    gemmMicroKernel(
      depth: kc, a: a, rowStride: rs, depthStride: ds, b: b, writer: &writer)
  }

  /// Writes accumulated rows of a tile into C: `α·acc` when β is 0 (C is not read), else
  /// `β·C + α·acc`. GEMM.swift merges partial edge tiles with the same two roundings.
  struct TileStore: TileWriter {
    typealias V = TileVector
    static var rows: Int { gemmTileRows }
    let c: UnsafeMutableRawPointer
    let rowBytes: Int
    let alpha: Float
    let beta: Float

    @inline(__always)
    init(_ c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
      (self.c, rowBytes, self.alpha, self.beta) = (UnsafeMutableRawPointer(c), ldc * 4, alpha, beta)
    }

    /// Row `index` of the tile, as two vectors side by side.
    @inline(__always)
    func row(_ index: Int, _ left: V, _ right: V) {
      store(left, at: index * rowBytes)
      store(right, at: index * rowBytes + V.scalarCount * 4)
    }

    @inline(__always)
    private func store(_ sum: V, at offset: Int) {
      c.storeBytes(of: value(sum, at: offset), toByteOffset: offset, as: V.self)
    }

    /// What the store at byte `offset` writes for the accumulated `sum`.
    @inline(__always)
    func value(_ sum: V, at offset: Int) -> V {
      let scaled = sum * alpha
      return beta == 0
        ? scaled : c.loadUnaligned(fromByteOffset: offset, as: V.self) * beta + scaled
    }
  }

  /// `TileStore` plus a row of bias (a linear layer's), added to each stored row: `β·C + α·acc
  /// + bias`, instead of the bias filled into C before the product (one more pass over C, 84 MB
  /// for SD 1.5's GEGLU projection at 64×64). A type of its own, so the plain store's kernel is
  /// compiled as before: an optional bias in `TileStore` made the compiler outline the kernel
  /// and address A's rows from one pointer again (8192×320·320×2560 at 50–80 instead of 84–91
  /// GFLOP/s on one thread).
  struct BiasedTileStore: TileWriter {
    typealias V = TileVector
    static var rows: Int { gemmTileRows }
    let plain: TileStore
    /// The bias of the tile's first column; read at the store, after the depth loop.
    let bias: UnsafeRawPointer

    @inline(__always)
    init(
      _ c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float,
      bias: UnsafePointer<Float>
    ) {
      plain = TileStore(c, ldc: ldc, alpha: alpha, beta: beta)
      self.bias = UnsafeRawPointer(bias)
    }

    @inline(__always)
    func row(_ index: Int, _ left: V, _ right: V) {
      store(left, at: index * plain.rowBytes, column: 0)
      store(right, at: index * plain.rowBytes + V.scalarCount * 4, column: V.scalarCount * 4)
    }

    @inline(__always)
    private func store(_ sum: V, at offset: Int, column: Int) {
      let value =
        plain.value(sum, at: offset) + bias.loadUnaligned(fromByteOffset: column, as: V.self)
      plain.c.storeBytes(of: value, toByteOffset: offset, as: V.self)
    }
  }

#endif

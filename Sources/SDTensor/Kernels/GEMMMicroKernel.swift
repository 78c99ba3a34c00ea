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
  ///
  /// The loops are written for few instructions besides a depth step's 12 FMAs and 8 loads. Four
  /// steps go per trip, A's six values of each found by x86's base + index·scale + offset
  /// addressing from two pointers: where A's rows run along the depth (every GEMM tile, the
  /// attention's K·Qᵀ) the row stride is the index and the step the offset; where its columns do
  /// (P·V, the GEMM's edge panels) the other way round. A step then costs about 21 instructions
  /// instead of 27 (the compiler had rebuilt the previous loop's six row pointers from one, with
  /// four adds a step). The FMA pipes do not notice while the core is ours alone; when another
  /// tenant's thread shares it, the core issues instructions for both and their count sets the
  /// pace. On a shared Zen 3 host the loop's prototype (one thread, operands in L1, medians of
  /// five, depth 256) ran at 88.7 against 72.0 and 74.5 against 67.5 GFLOP/s in busy runs, 96.6
  /// against 96.1 in a quiet one (a loop without A's broadcasts, the bound: 97.5–100.2); this
  /// code, two threads, paired rounds: the UNet's ten GEMM shapes 0.91–1.00× the time, the
  /// attention 0.90× and 0.97×. Each accumulator sees the same FMAs in the same order as before:
  /// the same bits.
  @inline(__always)
  func gemmMicroKernel<Writer: TileWriter>(
    depth kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, depthStride ds: Int,
    b: UnsafePointer<Float>, writer: inout Writer
  ) {
    var tile = AVX2Tile()
    let tall = Writer.rows > gemmShortTileRows
    let (rowBytes, depthBytes) = (rs &* 4, ds &* 4)
    var rowsB = UnsafeRawPointer(b)
    var first = UnsafeRawPointer(a)
    var p = 0
    if ds == 1 {
      var fourth = first + 3 &* rowBytes
      while p &+ 4 <= kc {
        for step in 0..<4 {
          tile.step(first, fourth, rowBytes, aOffset: step &* 4, rowsB, bOffset: step &* 64, tall)
        }
        (first, fourth, rowsB) = (first + 16, fourth + 16, rowsB + 256)
        p &+= 4
      }
    } else if rs == 1 {
      var third = first + 2 &* depthBytes
      while p &+ 4 <= kc {
        tile.step(first, first + 12, 4, aOffset: 0, rowsB, bOffset: 0, tall)
        tile.step(first, first + 12, 4, aOffset: depthBytes, rowsB, bOffset: 64, tall)
        tile.step(third, third + 12, 4, aOffset: 0, rowsB, bOffset: 128, tall)
        tile.step(third, third + 12, 4, aOffset: depthBytes, rowsB, bOffset: 192, tall)
        (first, third, rowsB) = (first + 4 &* depthBytes, third + 4 &* depthBytes, rowsB + 256)
        p &+= 4
      }
    }
    while p < kc {
      tile.step(first, first + 3 &* rowBytes, rowBytes, aOffset: 0, rowsB, bOffset: 0, tall)
      (first, rowsB) = (first + depthBytes, rowsB + 64)
      p &+= 1
    }
    writer.row(0, tile.c00, tile.c01)
    writer.row(1, tile.c10, tile.c11)
    writer.row(2, tile.c20, tile.c21)
    writer.row(3, tile.c30, tile.c31)
    if tall {
      writer.row(4, tile.c40, tile.c41)
      writer.row(5, tile.c50, tile.c51)
    }
  }

  /// The AVX2 tile's 12 accumulators (registers once inlined) and one depth step into them.
  private struct AVX2Tile {
    typealias V = TileVector
    var (c00, c01, c10, c11, c20, c21) = (V(), V(), V(), V(), V(), V())
    var (c30, c31, c40, c41, c50, c51) = (V(), V(), V(), V(), V(), V())

    /// One depth step: A's rows 0, 1, 2 at `first`, `first + stride`, `first + 2·stride` and
    /// rows 3, 4, 5 the same from `fourth` (4 and 5 only in a tall tile), each `aOffset` bytes
    /// further; the B row `bOffset` bytes into `rowsB`.
    @inline(__always)
    mutating func step(
      _ first: UnsafeRawPointer, _ fourth: UnsafeRawPointer, _ stride: Int, aOffset: Int,
      _ rowsB: UnsafeRawPointer, bOffset: Int, _ tall: Bool
    ) {
      let b0 = rowsB.loadUnaligned(fromByteOffset: bOffset, as: V.self)
      let b1 = rowsB.loadUnaligned(fromByteOffset: bOffset &+ 32, as: V.self)
      var s = V(repeating: first.load(fromByteOffset: aOffset, as: Float.self))
      c00.addProduct(s, b0)
      c01.addProduct(s, b1)
      s = V(repeating: first.load(fromByteOffset: stride &+ aOffset, as: Float.self))
      c10.addProduct(s, b0)
      c11.addProduct(s, b1)
      s = V(repeating: first.load(fromByteOffset: 2 &* stride &+ aOffset, as: Float.self))
      c20.addProduct(s, b0)
      c21.addProduct(s, b1)
      s = V(repeating: fourth.load(fromByteOffset: aOffset, as: Float.self))
      c30.addProduct(s, b0)
      c31.addProduct(s, b1)
      if tall {
        s = V(repeating: fourth.load(fromByteOffset: stride &+ aOffset, as: Float.self))
        c40.addProduct(s, b0)
        c41.addProduct(s, b1)
        s = V(repeating: fourth.load(fromByteOffset: 2 &* stride &+ aOffset, as: Float.self))
        c50.addProduct(s, b0)
        c51.addProduct(s, b1)
      }
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

// Level 1 and 2 checks of the kernels: each against PyTorch outputs committed in
// weights/fixtures/ops.safetensors (see weights/FIXTURES.md), and the fast paths against their
// plain-loop references on awkward shapes.

import SDTestSupport
import SDTensor
import Testing

private let two = ComputeOptions(threadCount: 2)

@Suite("Kernels match PyTorch (ops.safetensors)")
struct KernelReferenceTests {
  let ops: SafeTensorsFile

  init() throws { ops = try fixture("ops.safetensors") }

  func t(_ name: String) throws -> Tensor { try ops.tensor(name) }

  @Test("linear and batched matmul")
  func products() throws {
    expectClose(
      linear(try t("linear.x"), weight: try t("linear.weight"), bias: try t("linear.bias")),
      try t("linear.out"), "linear")
    expectClose(matmul(try t("matmul.a"), try t("matmul.b")), try t("matmul.out"), "matmul")
  }

  @Test(
    "conv2d: stride, padding, 1×1 and 3×3, batch",
    arguments: [("k3s1p1", 1, 1), ("k3s2p1", 2, 1), ("k1s1p0", 1, 0), ("k3s1p0", 1, 0)])
  func convolution(name: String, stride: Int, padding: Int) throws {
    let prefix = "conv.\(name)"
    let out = conv2d(
      try t("\(prefix).x"), weight: try t("\(prefix).weight"), bias: try t("\(prefix).bias"),
      stride: stride, padding: padding, options: two)
    expectClose(out, try t("\(prefix).out"), prefix)
  }

  @Test("conv2d after the VAE encoder's right/bottom padding")
  func paddedDownsample() throws {
    let prefix = "conv.k3s2p0_padded"
    let out = conv2d(
      padRightAndBottom(try t("\(prefix).x")), weight: try t("\(prefix).weight"),
      bias: try t("\(prefix).bias"), stride: 2, padding: 0, options: two)
    expectClose(out, try t("\(prefix).out"), prefix)
  }

  @Test(
    "group norm with its per-place epsilon",
    arguments: [("eps6", 32, Float(1e-6)), ("eps5", 32, Float(1e-5)), ("small", 3, Float(1e-5))])
  func groupNormalisation(name: String, groups: Int, eps: Float) throws {
    let prefix = "groupnorm.\(name)"
    let out = groupNorm(
      try t("\(prefix).x"), groups: groups, weight: try t("\(prefix).weight"),
      bias: try t("\(prefix).bias"), eps: eps, options: two)
    expectClose(out, try t("\(prefix).out"), prefix)
  }

  @Test("layer norm and softmax")
  func layerNormAndSoftmax() throws {
    let out = layerNorm(
      try t("layernorm.x"), weight: try t("layernorm.weight"), bias: try t("layernorm.bias"),
      eps: 1e-5, options: two)
    expectClose(out, try t("layernorm.out"), "layernorm")
    expectClose(softmax(try t("softmax.x"), options: two), try t("softmax.out"), "softmax")
  }

  @Test(
    "activations",
    arguments: [
      ("silu", Activation.silu), ("gelu", .gelu), ("gelu_tanh", .geluTanh),
      ("quick_gelu", .quickGELU),
    ])
  func activation(name: String, activation: Activation) throws {
    expectClose(activate(try t("act.x"), activation, options: two), try t("act.\(name)"), name)
  }

  @Test("GEGLU and nearest upsampling")
  func gegluAndUpsample() throws {
    expectClose(geglu(try t("geglu.x"), options: two), try t("geglu.out"), "geglu")
    let x = try t("upsample.x")
    expectClose(
      upsampleNearest(x, height: 2 * x.shape[2], width: 2 * x.shape[3], options: two),
      try t("upsample.out"), "upsample")
  }

  @Test(
    "attention: cross, causal, long",
    arguments: [
      ("attention", 2, false), ("attention_causal", 3, true), ("attention_long", 1, false),
    ])
  func attention(name: String, heads: Int, causal: Bool) throws {
    let out = scaledDotProductAttention(
      query: try t("\(name).q"), key: try t("\(name).k"), value: try t("\(name).v"), heads: heads,
      causal: causal, options: two)
    expectClose(out, try t("\(name).out"), name)
  }

  @Test(
    "sinusoidal timestep embedding",
    arguments: [
      ("flip", 32, true, Float(0)), ("noflip", 32, false, Float(1)), ("odd", 33, true, Float(0)),
    ])
  func timestepEmbeddings(name: String, dimension: Int, flip: Bool, shift: Float) throws {
    let out = timestepEmbedding(
      try t("temb.t").scalars, dimension: dimension, flipSinToCos: flip, downscaleFreqShift: shift)
    expectClose(out, try t("temb.\(name)"), "temb.\(name)")
  }
}

@Suite("Fast kernels match their plain-loop references")
struct KernelConsistencyTests {
  /// Sizes that cross every block edge of our GEMM: the register tile (12×32 or 6×16), the depth
  /// block (256), the row block (192 or 96) and the column block (2048), with both operands
  /// transposed or not, a scale and accumulation onto a bias; (600, 300, 100) is split over
  /// threads along its rows, with B packed once for all of them.
  @Test(
    "matmul across GEMM block edges, transposed operands, alpha and bias",
    arguments: [
      (13, 257, 33), (193, 513, 65), (5, 600, 2100), (97, 40, 4100), (200, 3, 7), (600, 300, 100),
    ])
  func gemmBlocks(m: Int, k: Int, n: Int) {
    let a = seededTensor([m, k], seed: 3)
    let b = seededTensor([k, n], seed: 4)
    let expected = referenceMatmul(a, b)
    let tolerance: Float = 1e-5 * Float(k).squareRoot()
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
      let product = matmul(
        ta ? a.transposedLastTwo() : a, tb ? b.transposedLastTwo() : b, transposeA: ta,
        transposeB: tb, options: two)
      let difference = compare(product, expected, name: "matmul \(m)x\(k)x\(n) ta \(ta) tb \(tb)")
      #expect(difference.isWithin(tolerance), "\(difference)")
    }
    let scaled = matmul(a, b, alpha: 0.25, options: two)
    let quarter = Tensor(shape: expected.shape, scalars: expected.scalars.map { $0 * 0.25 })
    #expect(compare(scaled, quarter, name: "alpha").isWithin(tolerance))
    // linear = x·Wᵀ + bias: the bias is accumulated onto (β = 1).
    let bias = seededTensor([n], seed: 5)
    let withBias = linear(a, weight: b.transposedLastTwo(), bias: bias, options: two)
    var biased = expected.scalars
    for row in 0..<m { for col in 0..<n { biased[row * n + col] += bias.scalars[col] } }
    let expectedBias = Tensor(shape: [m, n], scalars: biased)
    #expect(compare(withBias, expectedBias, name: "linear").isWithin(tolerance))
  }

  /// A product large enough to be split over threads gives the same bits for 1, 2 and 3 threads,
  /// and with our GEMM the same as its halves multiplied on their own (each too small to be
  /// split; a BLAS library may round a 257-row product differently from a 515-row one).
  @Test("matmul bits do not depend on the thread count or the split")
  func gemmThreads() {
    let a = seededTensor([515, 260], seed: 6)
    let b = seededTensor([260, 170], seed: 7)
    let one = matmul(a, b, options: ComputeOptions(threadCount: 1))
    for threads in [2, 3] {
      #expect(matmul(a, b, options: ComputeOptions(threadCount: threads)) == one)
    }
    guard Runtime.usesPortableGEMM else { return }
    let halves = [0..<257, 257..<515].map { rows in
      matmul(
        Tensor(
          shape: [rows.count, 260],
          scalars: Array(a.scalars[rows.lowerBound * 260..<rows.upperBound * 260])),
        b, options: ComputeOptions(threadCount: 1))
    }
    #expect(halves[0].scalars + halves[1].scalars == one.scalars)
  }

  /// The bias goes in with the first depth block's store (later blocks add onto it, as when it
  /// was filled into C first): within one depth block (k ≤ 256) that is the product plus the
  /// bias, one rounding, bit for bit; past it (k > 256) the bias joins the first block's partial
  /// sum. Edge tiles and both split paths (along the rows with B packed once, along the columns).
  @Test(
    "linear's bias, added by the GEMM's store, equals the product plus the bias",
    arguments: [
      (7, 13, 5), (64, 40, 33), (250, 256, 300), (31, 300, 17), (300, 600, 100),
      (40, 1000, 520),
    ])
  func linearBias(m: Int, k: Int, n: Int) {
    let x = seededTensor([m, k], seed: 11)
    let weight = seededTensor([n, k], seed: 12)
    let bias = seededTensor([n], seed: 13)
    let product = matmul(x, weight, transposeB: true, options: two)
    let expected = product + bias.reshaped([1, n])
    let withBias = linear(x, weight: weight, bias: bias, options: two)
    if k <= 256 && Runtime.usesPortableGEMM {
      #expect(withBias == expected)
    } else {
      #expect(compare(withBias, expected).isWithin(1e-6), "\(compare(withBias, expected))")
    }
    #expect(linear(x, weight: weight, bias: nil, options: two) == product)
  }

  @Test("linear with no input features gives every row the bias (zeros without one)")
  func linearWithoutInputs() {
    let x = Tensor(zeros: [2, 3, 0])
    let weight = Tensor(zeros: [5, 0])
    let bias = seededTensor([5], seed: 14)
    let biased = linear(x, weight: weight, bias: bias, options: two)
    #expect(biased.shape == [2, 3, 5])
    #expect(biased.scalars == Array((0..<6).map { _ in bias.scalars }.joined()))
    #expect(linear(x, weight: weight, bias: nil, options: two) == Tensor(zeros: [2, 3, 5]))
  }

  @Test("matmul on awkward sizes", arguments: [(1, 1, 1), (7, 13, 5), (31, 2, 17), (64, 40, 33)])
  func matmulShapes(m: Int, k: Int, n: Int) {
    let a = seededTensor([m, k], seed: 1)
    let b = seededTensor([k, n], seed: 2)
    let difference = compare(matmul(a, b), referenceMatmul(a, b), name: "matmul \(m)x\(k)x\(n)")
    #expect(difference.isWithin(1e-5), "\(difference)")
  }

  @Test(
    "conv2d tiles and strides",
    arguments: [
      ([1, 3, 5, 7], [2, 3, 3, 3], 1, 1), ([2, 5, 11, 3], [4, 5, 3, 3], 2, 1),
      ([1, 2, 9, 9], [3, 2, 1, 1], 1, 0), ([1, 1, 4, 4], [1, 1, 3, 3], 2, 2),
      // Winograd F(4×4, 3×3) path (at least 64 4×4 tiles per image): sizes not divisible by 4
      // leave partial tiles at the right and bottom.
      ([2, 8, 33, 29], [9, 8, 3, 3], 1, 1), ([1, 12, 30, 35], [8, 12, 3, 3], 1, 1),
      // Wide enough for whole eight-tile vectors in the transforms, plus a partial one.
      ([2, 16, 32, 45], [16, 16, 3, 3], 1, 1), ([1, 8, 29, 70], [10, 8, 3, 3], 1, 1),
      // Winograd F(2×2, 3×3) path (fewer than 64 4×4 tiles, at least 64 2×2 ones): an even
      // square, odd sizes with partial tiles, and a row of two whole eight-tile vectors plus a
      // partial one.
      ([2, 8, 16, 16], [12, 8, 3, 3], 1, 1), ([1, 9, 17, 15], [8, 9, 3, 3], 1, 1),
      ([1, 8, 9, 35], [9, 8, 3, 3], 1, 1),
    ])
  func convolutionShapes(input: [Int], weight: [Int], stride: Int, padding: Int) {
    let x = seededTensor(input, seed: 3)
    let w = seededTensor(weight, seed: 4)
    let b = seededTensor([weight[0]], seed: 5)
    let fast = conv2d(
      x, weight: w, bias: b, stride: stride, padding: padding,
      options: ComputeOptions(threadCount: 2))
    let slow = referenceConv2d(x, weight: w, bias: b, stride: stride, padding: padding)
    let difference = compare(fast, slow, name: "conv \(input) \(weight)")
    #expect(difference.isWithin(1e-5), "\(difference)")
  }

  /// Layers whose transformed weights exceed the budget (128 MB) run their output channels in
  /// blocks: 16 × 1451 × 1448 floats are 134 MB, two uneven blocks of the F2 path at 16×16. The
  /// reference is the same convolution as one product of an explicit lowering (the plain-loop
  /// reference would take minutes at this size).
  @Test("Winograd in blocks of output channels equals the lowered product")
  func winogradInChannelBlocks() {
    let (c, o, side) = (1448, 1451, 16)
    let x = seededTensor([1, c, side, side], seed: 21)
    let w = seededTensor([o, c, 3, 3], seed: 22)
    let b = seededTensor([o], seed: 23)
    var lowered = [Float](repeating: 0, count: c * 9 * side * side)
    for channel in 0..<c {
      for ky in 0..<3 {
        for kx in 0..<3 {
          let row = (channel * 9 + ky * 3 + kx) * side * side
          for y in 0..<side {
            for xx in 0..<side {
              let (iy, ix) = (y + ky - 1, xx + kx - 1)
              guard iy >= 0 && iy < side && ix >= 0 && ix < side else { continue }
              lowered[row + y * side + xx] = x.scalars[(channel * side + iy) * side + ix]
            }
          }
        }
      }
    }
    var expected = matmul(
      w.reshaped([o, c * 9]), Tensor(shape: [c * 9, side * side], scalars: lowered),
      options: two)
    expected = (expected + b.reshaped([o, 1])).reshaped([1, o, side, side])
    let fast = conv2d(x, weight: w, bias: b, padding: 1, options: two)
    let difference = compare(fast, expected, name: "blocked Winograd")
    #expect(difference.isWithin(1e-5), "\(difference)")
  }

  @Test("attention in query blocks equals the reference, with and without the causal mask")
  func attentionBlocks() {
    for causal in [false, true] {
      let q = seededTensor([2, 17, 12], seed: 6)
      let k = seededTensor([2, 17, 12], seed: 7)
      let v = seededTensor([2, 17, 12], seed: 8)
      let fast = scaledDotProductAttention(
        query: q, key: k, value: v, heads: 3, causal: causal,
        options: ComputeOptions(threadCount: 2))
      let slow = referenceAttention(query: q, key: k, value: v, heads: 3, causal: causal)
      let difference = compare(fast, slow, name: "attention causal=\(causal)")
      #expect(difference.isWithin(1e-5), "\(difference)")
    }
  }

  /// The fused kernel at odd token counts (1, 7, 77, 4095: partial query, key and edge tiles;
  /// 410 × 410 at d = 160, K and V large enough for four query blocks a call, with the causal
  /// mask: blocks of one call that visit different numbers of key blocks) and head sizes 40, 64, 80, 160 (SD 1.x, SD 2.x's 64, SDXL's 80, 160) and 42, 18, 3
  /// (P·V tiles that end past d: zero-padded edges), self- and cross-attention, with the causal
  /// mask where the counts agree; values scaled ×4 so the softmax is not flat.
  @Test(
    "fused attention at odd sizes",
    arguments: [
      (1, 1, 40), (7, 77, 64), (77, 77, 80), (33, 7, 160), (4095, 9, 40), (130, 4095, 64),
      (45, 45, 42), (77, 300, 18), (5, 150, 3), (410, 410, 160),
    ])
  func attentionShapes(queries: Int, keys: Int, d: Int) {
    let heads = 2
    func scaled(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars.map { 4 * $0 }) }
    let q = scaled(seededTensor([1, queries, heads * d], seed: 11))
    let k = scaled(seededTensor([1, keys, heads * d], seed: 12))
    let v = seededTensor([1, keys, heads * d], seed: 13)
    for causal in queries == keys ? [false, true] : [false] {
      let fast = scaledDotProductAttention(
        query: q, key: k, value: v, heads: heads, causal: causal, options: two)
      let slow = referenceAttention(query: q, key: k, value: v, heads: heads, causal: causal)
      let difference = compare(
        fast, slow, name: "attention \(queries)x\(keys) d \(d) causal \(causal)")
      // The softmax sum over 4095 keys accumulates in float (the reference in double): its
      // rounding grows with the key count, ~1e-5 at 4095 keys.
      #expect(difference.isWithin(keys > 1000 ? 3e-5 : 1e-5), "\(difference)")
    }
  }

  @Test("group norm with fused SiLU equals norm then SiLU; results do not depend on threads")
  func groupNormFusion() {
    let x = seededTensor([2, 64, 3, 5], seed: 9)
    let gamma = seededTensor([64], seed: 10)
    let beta = seededTensor([64], seed: 11)
    let one = ComputeOptions(threadCount: 1)
    let plain = referenceGroupNorm(x, groups: 32, weight: gamma, bias: beta, eps: 1e-5)
    let fused = groupNorm(
      x, groups: 32, weight: gamma, bias: beta, eps: 1e-5, activation: .silu, options: two)
    let expected = plain.map { Activation.silu.reference($0) }
    #expect(compare(fused, expected).isWithin(1e-5), "\(compare(fused, expected))")
    let single = groupNorm(
      x, groups: 32, weight: gamma, bias: beta, eps: 1e-5, activation: .silu, options: one)
    #expect(single == fused)
  }

  @Test("vector activations match libm over a wide range")
  func activationAccuracy() {
    let x = Tensor(shape: [2001], scalars: (0...2000).map { Float($0 - 1000) / 50 })
    for activation in [Activation.silu, .gelu, .geluTanh, .quickGELU, .relu] {
      let fast = activate(x, activation, options: two)
      let slow = x.map { activation.reference($0) }
      #expect(compare(fast, slow).isWithin(1e-6), "\(activation): \(compare(fast, slow))")
    }
  }

  @Test("repeated batch rows are computed once, with the bits of the whole batch")
  func distinctRows() {
    let (a, b, c) = (
      seededTensor([1, 8, 9, 9], seed: 1), seededTensor([1, 8, 9, 9], seed: 2),
      seededTensor([1, 8, 9, 9], seed: 3)
    )
    let weight = seededTensor([16, 8, 3, 3], seed: 4)
    func convolve(_ x: Tensor) -> Tensor {
      conv2d(x, weight: weight, bias: nil, padding: 1, options: two)
    }
    for rows in [[a, b, a, c, b], [a, a], [a, b, c], [b]] {
      let x = concatenate(rows, axis: 0)
      var seen: [Int] = []
      let result = onDistinctRows(x) { distinct in
        seen.append(distinct.shape[0])
        return convolve(distinct)
      }
      #expect(seen == [Set(rows.map(\.scalars)).count], "rows the body saw")
      #expect(result == convolve(x))
    }
  }

  @Test("permute and broadcasting arithmetic")
  func dataMovement() {
    let x = Tensor(shape: [2, 3, 4], scalars: (0..<24).map(Float.init))
    let p = x.permuted([2, 0, 1])
    #expect(p.shape == [4, 2, 3])
    #expect(p.scalars[0..<6] == [0, 4, 8, 12, 16, 20])
    let bias = Tensor(shape: [3, 1], scalars: [100, 200, 300])
    let sum = x + bias
    #expect(sum.scalars[0] == 100 && sum.scalars[4] == 204 && sum.scalars[23] == 323)
    let parts = split(x, sizes: [1, 2], axis: 1)
    #expect(parts[1].shape == [2, 2, 4] && parts[1].scalars[0] == 4)
    #expect(concatenate(parts, axis: 1) == x)
  }

  @Test(
    "last-two-axes transpose equals the permutation, whole and partial 8×8 tiles",
    arguments: [[2, 64, 40], [3, 13, 21], [1, 8, 8], [2, 7, 5], [5, 1, 9], [17, 16]])
  func transposeLastTwo(shape: [Int]) {
    let x = seededTensor(shape, seed: 7)
    let axes = Array(0..<(shape.count - 2)) + [shape.count - 1, shape.count - 2]
    #expect(x.transposedLastTwo(options: two) == x.permuted(axes))
    #expect(x.transposedLastTwo(options: ComputeOptions(threadCount: 1)) == x.permuted(axes))
  }
}

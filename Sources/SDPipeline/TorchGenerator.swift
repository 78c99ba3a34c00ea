// A generator that reproduces torch.Generator("cpu").manual_seed(s) and torch.randn(..., dtype=
// float32) bit for bit, so a seed gives the same image as diffusers on the CPU.
//
// What torch does (ATen: core/MT19937RNGEngine.h, core/DistributionsHelper.h,
// native/cpu/DistributionTemplates.h and avx_mathfun.h):
// - MT19937 seeded with the low 32 bits of the seed (Knuth's initialisation).
// - float uniforms: (random() & (2²⁴ − 1)) · 2⁻²⁴; double uniforms: random64() = (r₁ << 32) | r₂
//   masked to 53 bits, · 2⁻⁵³.
// - A contiguous float tensor of 16 or more elements (normal_fill, AVX2 path): all uniforms are
//   drawn first, then each block of 16 is turned into normals in place by Box–Muller over the
//   pairs (j, j + 8), with avx_mathfun's Cephes log and sincos compiled with fused multiply-adds.
//   When the size is not a multiple of 16, 16 fresh uniforms are drawn for the last 16 elements,
//   which overlap values already written.
// - Smaller tensors take the scalar path: normal_distribution<double> draws two double uniforms,
//   returns r·cos θ and caches r·sin θ for the next scalar draw.

import Foundation
import SDTensor

/// torch's CPU generator: MT19937 plus the cached second Box–Muller value of the scalar path.
public struct TorchGenerator: Sendable {
  private var state: [UInt32]
  private var index: Int
  private var cachedNormal: Double?

  /// `torch.Generator("cpu").manual_seed(seed)`.
  public init(seed: UInt64) {
    var state = [UInt32](repeating: 0, count: 624)
    state[0] = UInt32(truncatingIfNeeded: seed)
    for i in 1..<624 {
      state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
    }
    self.state = state
    index = 624
    cachedNormal = nil
  }

  /// The next 32-bit MT19937 output.
  public mutating func nextUInt32() -> UInt32 {
    if index == 624 { twist() }
    var y = state[index]
    index += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C_5680
    y ^= (y << 15) & 0xEFC6_0000
    y ^= y >> 18
    return y
  }

  private mutating func twist() {
    for i in 0..<624 {
      let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
      var next = y >> 1
      if y & 1 != 0 { next ^= 0x9908_B0DF }
      state[i] = state[(i + 397) % 624] ^ next
    }
    index = 0
  }

  private mutating func uniformFloat() -> Float {
    Float(nextUInt32() & 0xFF_FFFF) * (1 / Float(1 << 24))
  }

  private mutating func uniformDouble() -> Double {
    let high = UInt64(nextUInt32())
    let low = UInt64(nextUInt32())
    return Double(((high << 32) | low) & ((1 << 53) - 1)) * (1 / Double(UInt64(1) << 53))
  }

  /// `torch.randn(shape, generator: self)` in float32.
  public mutating func randn(_ shape: [Int]) -> Tensor {
    let count = shape.reduce(1, *)
    var values = [Float](repeating: 0, count: count)
    if count >= 16 {
      for i in 0..<count { values[i] = uniformFloat() }
      var start = 0
      while start + 16 <= count {
        Self.boxMuller16(&values, at: start)
        start += 16
      }
      if count % 16 != 0 {
        for i in (count - 16)..<count { values[i] = uniformFloat() }
        Self.boxMuller16(&values, at: count - 16)
      }
    } else {
      for i in 0..<count { values[i] = Float(scalarNormal()) }
    }
    return Tensor(shape: shape, scalars: values)
  }

  /// normal_distribution<double>: Box–Muller with a cached second value.
  private mutating func scalarNormal() -> Double {
    if let cached = cachedNormal {
      cachedNormal = nil
      return cached
    }
    let u1 = uniformDouble()
    let u2 = uniformDouble()
    let radius = (-2 * Foundation.log1p(-u2)).squareRoot()
    let theta = 2 * Double.pi * u1
    cachedNormal = radius * Foundation.sin(theta)
    return radius * Foundation.cos(theta)
  }

  /// normal_fill_16_AVX2 on one block: pairs (j, j + 8) of uniforms become two normals.
  private static func boxMuller16(_ data: inout [Float], at start: Int) {
    let twoPi = Float(2 * Double.pi)
    for j in 0..<8 {
      let u1 = 1 - data[start + j]
      let u2 = data[start + j + 8]
      let radius = (-2 * cephesLog(u1)).squareRoot()
      let (sine, cosine) = cephesSinCos(twoPi * u2)
      data[start + j] = radius * cosine
      data[start + j + 8] = radius * sine
    }
  }

  /// avx_mathfun's log256_ps for one lane, with the fused multiply-adds of torch's build.
  static func cephesLog(_ input: Float) -> Float {
    var x = max(input, Float(bitPattern: 0x0080_0000))
    var exponent = Float(Int32(bitPattern: x.bitPattern >> 23) - 0x7F) + 1
    x = Float(bitPattern: (x.bitPattern & ~0x7F80_0000) | Float(0.5).bitPattern)
    let below = x < 0.707_106_781_186_547_524
    let correction: Float = below ? x : 0
    x -= 1
    if below { exponent -= 1 }
    x += correction
    let z = x * x
    var y: Float = 7.037_683_629_2e-2
    for c: Float in [
      -1.151_461_031_0e-1, 1.167_699_874_0e-1, -1.242_014_084_6e-1, 1.424_932_278_7e-1,
      -1.666_805_766_5e-1, 2.000_071_476_5e-1, -2.499_999_399_3e-1, 3.333_333_117_4e-1,
    ] {
      y = c.addingProduct(y, x)
    }
    y = y * x
    y = (exponent * -2.121_944_40e-4).addingProduct(y, z)
    y = y.addingProduct(z, -0.5)
    x = x + y
    return x.addingProduct(exponent, 0.693_359_375)
  }

  /// avx_mathfun's sincos256_ps for one lane, with the fused multiply-adds of torch's build.
  static func cephesSinCos(_ theta: Float) -> (sin: Float, cos: Float) {
    var signSine = theta.bitPattern & 0x8000_0000
    var x = Float(bitPattern: theta.bitPattern & 0x7FFF_FFFF)
    var quadrant = Int32(x * 1.273_239_544_735_16)  // truncation, as cvttps
    quadrant = (quadrant + 1) & ~1
    let y = Float(quadrant)
    signSine ^= UInt32(bitPattern: quadrant & 4) << 29
    let usesSinePolynomial = quadrant & 2 == 0
    let signCosine = UInt32(bitPattern: ~(quadrant - 2) & 4) << 29
    // Extended-precision range reduction: x − y·π/4 in three parts.
    x = x.addingProduct(y, -0.785_156_25)
    x = x.addingProduct(y, -2.418_756_484_985_351_562_5e-4)
    x = x.addingProduct(y, -3.774_894_977_445_941_08e-8)
    let z = x * x
    var cosine = Float(-1.388_731_625_493_765e-3).addingProduct(2.443_315_711_809_948e-5, z)
    cosine = Float(4.166_664_568_298_827e-2).addingProduct(cosine, z)
    cosine = cosine * z
    cosine = (-(z * 0.5)).addingProduct(cosine, z)
    cosine = cosine + 1
    var sine = Float(8.332_160_873_6e-3).addingProduct(-1.951_529_589_1e-4, z)
    sine = Float(-1.666_665_461_1e-1).addingProduct(sine, z)
    sine = sine * z
    sine = x.addingProduct(sine, x)
    let sinValue = usesSinePolynomial ? sine : cosine
    let cosValue = usesSinePolynomial ? cosine : sine
    return (
      Float(bitPattern: sinValue.bitPattern ^ signSine),
      Float(bitPattern: cosValue.bitPattern ^ signCosine)
    )
  }
}

// Vectorised transcendental functions on SIMD8<Float>. A scalar `exp` in softmax costs ~6 s per
// UNet step on one core (DESIGN.md); these polynomials keep that under a second.

/// e^x for each lane; relative error below 2e-7 for x in [-87, 88], 0 below -87.3 (where the true
/// value is subnormal), saturated above. Cody–Waite range reduction with the Cephes polynomial.
@inlinable @inline(__always)
func vectorExp(_ value: SIMD8<Float>) -> SIMD8<Float> {
  let x = value.clamped(lowerBound: SIMD8(repeating: -87.3), upperBound: SIMD8(repeating: 88.3))
  let n = (x * 1.442_695_04).rounded(.toNearestOrEven)
  // ln 2 split in a high part with few mantissa bits and a correction, so r is exact-ish.
  var r = x - n * 0.693_359_375
  r = r + n * 2.121_944_4e-4
  var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
  p = p * r + 1.398_199_95e-3
  p = p * r + 8.333_451_9e-3
  p = p * r + 4.166_579_59e-2
  p = p * r + 0.166_666_655
  p = p * r + 0.500_000_01
  p = p * (r * r) + r + 1
  // 2^n assembled in the exponent field.
  let exponent = (SIMD8<Int32>(truncatingIfNeeded: SIMD8<Int>(n)) &+ 127) &<< 23
  let scale = unsafeBitCast(exponent, to: SIMD8<Float>.self)
  return (p * scale).replacing(with: 0, where: value .< -87.3)
}

/// erf(x) for each lane, absolute error below 2e-7 (Abramowitz & Stegun 7.1.26 form with an
/// extra term, evaluated on |x| and mirrored).
@inlinable @inline(__always)
func vectorErf(_ value: SIMD8<Float>) -> SIMD8<Float> {
  let a = abs(value)
  let t = 1 / (1 + 0.327_591_1 * a)
  var p = SIMD8<Float>(repeating: 1.061_405_429)
  p = p * t - 1.453_152_027
  p = p * t + 1.421_413_741
  p = p * t - 0.284_496_736
  p = p * t + 0.254_829_592
  let magnitude = 1 - p * t * vectorExp(-a * a)
  return magnitude.replacing(with: -magnitude, where: value .< 0)
}

/// tanh(x) for each lane via e^{2x}, exact to ~1e-7 away from 0 and linear near it.
@inlinable @inline(__always)
func vectorTanh(_ value: SIMD8<Float>) -> SIMD8<Float> {
  let e = vectorExp(2 * value.clamped(lowerBound: SIMD8(repeating: -20), upperBound: SIMD8(repeating: 20)))
  let result = (e - 1) / (e + 1)
  // Near 0 the quotient loses relative precision; tanh(x) ≈ x - x³/3 there.
  let small = abs(value) .< 1e-3
  return result.replacing(with: value - value * value * value / 3, where: small)
}

/// Absolute value per lane.
@inlinable @inline(__always)
func abs(_ v: SIMD8<Float>) -> SIMD8<Float> { v.replacing(with: -v, where: v .< 0) }

/// Calls `body` on every SIMD8 block of `count` floats at `src`, writing to `dst`; the tail is
/// padded with zeros and only its valid lanes are stored. `src` and `dst` may be the same.
@inlinable @inline(__always)
func forEachVector(
  _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int,
  _ body: (SIMD8<Float>) -> SIMD8<Float>
) {
  var i = 0
  while i + 8 <= count {
    let v = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(dst + i).storeBytes(of: body(v), as: SIMD8<Float>.self)
    i += 8
  }
  if i < count {
    var v = SIMD8<Float>(repeating: 0)
    for lane in 0..<(count - i) { v[lane] = src[i + lane] }
    let r = body(v)
    for lane in 0..<(count - i) { dst[i + lane] = r[lane] }
  }
}

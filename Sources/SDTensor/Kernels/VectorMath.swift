// Branch-free transcendental functions written so LLVM's loop vectoriser turns loops over them
// into SIMD code for whatever vector ISA the build targets. A scalar libm `exp` in softmax costs
// ~6 s per UNet step on one core (DESIGN.md).
// Measured here: Swift's generic SIMD8 helpers (rounded, clamped, replacing(with:where:), lane
// conversions) compile to per-lane loops and ran softmax at 12 ns per element; these plain
// scalar forms vectorise.

/// 1.5 · 2²³: adding and subtracting it rounds a float of magnitude < 2²² to the nearest integer
/// without a rounding instruction (SSE2 has none).
@usableFromInline let roundingMagic: Float = 12_582_912

/// e^x; relative error below 2e-7 for x in [-87, 88], 0 below -87.3 (where the true value is
/// subnormal), saturated above. Cody–Waite range reduction with the Cephes polynomial.
@inlinable @inline(__always)
func fastExp(_ value: Float) -> Float {
  let x = Swift.min(Swift.max(value, -87.3), 88.3)
  let shifted = x * 1.442_695_04 + roundingMagic
  let n = shifted - roundingMagic
  // ln 2 split in a high part with few mantissa bits and a correction.
  var r = x - n * 0.693_359_375
  r = r + n * 2.121_944_4e-4
  var p: Float = 1.987_569_15e-4
  p = p * r + 1.398_199_95e-3
  p = p * r + 8.333_451_9e-3
  p = p * r + 4.166_579_59e-2
  p = p * r + 0.166_666_655
  p = p * r + 0.500_000_01
  p = p * (r * r) + r + 1
  // 2^n assembled in the exponent field; n is read from the low mantissa bits of `shifted`
  // (a float-to-int conversion would add an overflow trap that stops vectorisation).
  let scale = Float(bitPattern: (shifted.bitPattern &- roundingMagic.bitPattern &+ 127) &<< 23)
  return value < -87.3 ? 0 : p * scale
}

/// erf(x), absolute error below 2e-7 (Abramowitz & Stegun 7.1.26, evaluated on |x| and
/// mirrored).
@inlinable @inline(__always)
func fastErf(_ value: Float) -> Float {
  let a = Swift.abs(value)
  let t = 1 / (1 + 0.327_591_1 * a)
  var p: Float = 1.061_405_429
  p = p * t - 1.453_152_027
  p = p * t + 1.421_413_741
  p = p * t - 0.284_496_736
  p = p * t + 0.254_829_592
  let magnitude = 1 - p * t * fastExp(-a * a)
  return value < 0 ? -magnitude : magnitude
}

/// tanh(x) via e^{2x}; near 0, where that quotient loses relative precision, x − x³/3.
@inlinable @inline(__always)
func fastTanh(_ value: Float) -> Float {
  let e = fastExp(2 * Swift.min(Swift.max(value, -20), 20))
  let quotient = (e - 1) / (e + 1)
  return Swift.abs(value) < 1e-3 ? value - value * value * value / 3 : quotient
}

/// dst[i] = body(src[i]) for i in 0..<count; `src` and `dst` may be the same. Inlined at each
/// use so every activation gets its own vectorised loop.
@inlinable @inline(__always)
func transform(
  _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int,
  _ body: (Float) -> Float
) {
  for i in 0..<count { dst[i] = body(src[i]) }
}

/// The largest of `count` floats (−∞ when empty). Four independent SIMD8 running maxima, so the
/// loop vectorises without reassociation and is not bound by the latency of one compare chain
/// (one chain held the attention softmax's max pass to ~2 cycles per 8 floats).
@inline(__always)
func maximum(_ p: UnsafePointer<Float>, count: Int) -> Float {
  var lanes = (
    SIMD8<Float>(repeating: -.infinity), SIMD8<Float>(repeating: -.infinity),
    SIMD8<Float>(repeating: -.infinity), SIMD8<Float>(repeating: -.infinity)
  )
  let raw = UnsafeRawPointer(p)
  var i = 0
  while i + 32 <= count {
    lanes.0 = laneMax(lanes.0, raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
    lanes.1 = laneMax(
      lanes.1, raw.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
    lanes.2 = laneMax(
      lanes.2, raw.loadUnaligned(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self))
    lanes.3 = laneMax(
      lanes.3, raw.loadUnaligned(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self))
    i += 32
  }
  var result = laneMax(laneMax(lanes.0, lanes.1), laneMax(lanes.2, lanes.3)).max()
  while i < count { result = Swift.max(result, p[i]); i += 1 }
  return result
}

/// The sum of `count` floats, in four SIMD8 accumulators combined in a fixed order (so the
/// result does not depend on the thread count), for the same reason as `maximum`.
@inline(__always)
func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
  var lanes = (
    SIMD8<Float>(repeating: 0), SIMD8<Float>(repeating: 0), SIMD8<Float>(repeating: 0),
    SIMD8<Float>(repeating: 0)
  )
  let raw = UnsafeRawPointer(p)
  var i = 0
  while i + 32 <= count {
    lanes.0 += raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
    lanes.1 += raw.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self)
    lanes.2 += raw.loadUnaligned(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self)
    lanes.3 += raw.loadUnaligned(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self)
    i += 32
  }
  var result = ((lanes.0 + lanes.1) + (lanes.2 + lanes.3)).sum()
  while i < count { result += p[i]; i += 1 }
  return result
}

/// Lane-wise maximum, as a per-lane loop that LLVM turns into one `vmaxps` (the standard
/// library's generic `pointwiseMax` compiles to scalar code, and `Swift.max`'s `b >= a` to a
/// compare and blend). The same result as `Swift.max(a, b)`, NaN in either operand included,
/// but for the sign of a zero when a and b are zeros of opposite signs.
@inline(__always)
func laneMax<V: SIMD>(_ a: V, _ b: V) -> V where V.Scalar == Float {
  var result = a
  for lane in 0..<V.scalarCount { result[lane] = b[lane] > a[lane] ? b[lane] : a[lane] }
  return result
}

// 2-D convolution as PyTorch's nn.Conv2d (cross-correlation), lowered to im2col + sgemm.
// Legend: n batch, c input channels, o output channels, h/w input size, ho/wo output size,
// kh/kw kernel size, s stride, p padding.

/// Geometry of one convolution, shared by the fast and the reference paths.
struct ConvGeometry {
  let n: Int, c: Int, h: Int, w: Int
  let o: Int, kh: Int, kw: Int
  let stride: Int, padding: Int
  var ho: Int { (h + 2 * padding - kh) / stride + 1 }
  var wo: Int { (w + 2 * padding - kw) / stride + 1 }

  init(input: [Int], weight: [Int], stride: Int, padding: Int) {
    precondition(input.count == 4 && weight.count == 4, "conv2d: input \(input), weight \(weight)")
    precondition(
      input[1] == weight[1], "conv2d: input channels \(input) do not fit weight \(weight)")
    (n, c, h, w) = (input[0], input[1], input[2], input[3])
    (o, kh, kw) = (weight[0], weight[2], weight[3])
    self.stride = stride
    self.padding = padding
    precondition(
      stride >= 1 && h + 2 * padding >= kh && w + 2 * padding >= kw,
      "conv2d: input \(input) too small for kernel \(weight) with padding \(padding)")
  }
}

/// Bytes of im2col scratch one tile of output rows may use; keeps the lowered tile in L2/L3
/// instead of lowering the whole image (a 512×512 VAE layer would need gigabytes).
private let im2colTileBudget = 6 << 20

/// 2-D convolution: `[n, c, h, w]` ⊛ weight `[o, c, kh, kw]` (+ bias `[o]`) -> `[n, o, ho, wo]`,
/// zero padding on all four sides.
public func conv2d(
  _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0,
  options: ComputeOptions
) -> Tensor {
  conv2d(
    x, weight: Weight(weight), bias: bias, stride: stride, padding: padding, options: options)
}

/// `conv2d` with a layer weight: Float32 values are used where they are (in memory or in the
/// checkpoint's file mapping), half-precision ones widened once for the call.
public func conv2d(
  _ x: Tensor, weight: Weight, bias: Tensor?, stride: Int = 1, padding: Int = 0,
  options: ComputeOptions
) -> Tensor {
  let g = ConvGeometry(input: x.shape, weight: weight.shape, stride: stride, padding: padding)
  if let bias { precondition(bias.shape == [g.o], "conv2d bias \(bias.shape) for \(g.o) outputs") }
  let (ho, wo) = (g.ho, g.wo)
  let k = g.c * g.kh * g.kw
  let pointwise = g.kh == 1 && g.kw == 1 && stride == 1 && padding == 0
  let rowsPerTile = Swift.max(1, Swift.min(ho, im2colTileBudget / (4 * k * wo)))
  return Tensor(shape: [g.n, g.o, ho, wo]) { out in
    guard let outBase = out.baseAddress else { return }
    x.scalars.withUnsafeBufferPointer { px in
      weight.withFloats(options: options) { wBase in
        guard let xBase = px.baseAddress else { return }
        if let tiling = winogradTiling(g) {
          for item in 0..<g.n {
            fillBias(
              bias, outBase + item * g.o * ho * wo, channels: g.o, count: ho * wo, ldc: ho * wo)
          }
          winogradConv3x3(tiling, xBase, weight: wBase, g, into: outBase, options: options)
          return
        }
        if pointwise {
          for item in 0..<g.n {
            let output = outBase + item * g.o * ho * wo
            fillBias(bias, output, channels: g.o, count: ho * wo, ldc: ho * wo)
            sgemm(
              transposeA: false, transposeB: false, m: g.o, n: ho * wo, k: k,
              a: wBase, lda: k, b: xBase + item * g.c * g.h * g.w, ldb: g.h * g.w, beta: 1,
              c: output, ldc: ho * wo, options: options)
          }
          return
        }
        // Tasks are (image, tile of output rows): each lowers its tile into its own scratch and
        // multiplies it by the weights, on one thread, writing only its output rows.
        let tilesPerImage = (ho + rowsPerTile - 1) / rowsPerTile
        let (input, weights, output) = (
          SharedPointer(xBase), SharedPointer(wBase), SharedMutablePointer(outBase)
        )
        let single = ComputeOptions(threadCount: 1)
        // One task only (one small image): let its product use the threads instead.
        let productOptions = g.n * tilesPerImage == 1 ? options : single
        parallelFor(g.n * tilesPerImage, grain: 1, options: options) { range in
          var columns = [Float](repeating: 0, count: k * rowsPerTile * wo)
          columns.withUnsafeMutableBufferPointer { pcols in
            guard let colBase = pcols.baseAddress else { return }
            for task in range {
              let item = task / tilesPerImage
              let y0 = (task % tilesPerImage) * rowsPerTile
              let rows = Swift.min(rowsPerTile, ho - y0)
              let image = input.base + item * g.c * g.h * g.w
              let tile = output.base + item * g.o * ho * wo + y0 * wo
              fillBias(bias, tile, channels: g.o, count: rows * wo, ldc: ho * wo)
              im2col(image, g, firstRow: y0, rows: rows, into: colBase, options: single)
              sgemm(
                transposeA: false, transposeB: false, m: g.o, n: rows * wo, k: k,
                a: weights.base, lda: k, b: colBase, ldb: rows * wo, beta: 1, c: tile, ldc: ho * wo,
                options: productOptions)
            }
          }
        }
      }
    }
  }
}

/// Writes `bias[o]` (or 0) into `count` outputs of each channel row, so sgemm can accumulate.
private func fillBias(
  _ bias: Tensor?, _ c: UnsafeMutablePointer<Float>, channels: Int, count: Int, ldc: Int
) {
  for channel in 0..<channels {
    let value = bias?.scalars[channel] ?? 0
    (c + channel * ldc).update(repeating: value, count: count)
  }
}

/// Lowers output rows `firstRow..<firstRow+rows` of one image to a `[c·kh·kw, rows·wo]` matrix.
private func im2col(
  _ input: UnsafePointer<Float>, _ g: ConvGeometry, firstRow: Int, rows: Int,
  into columns: UnsafeMutablePointer<Float>, options: ComputeOptions
) {
  let wo = g.wo
  let tileColumns = rows * wo
  let source = SharedPointer(input)
  // Each (channel, ky, kx) row of the lowered matrix is written by exactly one iteration.
  let destination = SharedMutablePointer(columns)
  parallelFor(g.c * g.kh * g.kw, grain: 8, options: options) { range in
    for row in range {
      let channel = row / (g.kh * g.kw)
      let ky = (row / g.kw) % g.kh
      let kx = row % g.kw
      let plane = source.base + channel * g.h * g.w
      let dst = destination.base + row * tileColumns
      for oy in 0..<rows {
        let iy = (firstRow + oy) * g.stride - g.padding + ky
        let line = dst + oy * wo
        guard iy >= 0 && iy < g.h else {
          line.update(repeating: 0, count: wo)
          continue
        }
        let srcRow = plane + iy * g.w
        if g.stride == 1 {
          // Contiguous run: the x range whose input column is inside the image.
          let lo = Swift.min(wo, Swift.max(0, g.padding - kx))
          let hi = Swift.max(lo, Swift.min(wo, g.w + g.padding - kx))
          line.update(repeating: 0, count: lo)
          (line + lo).update(from: srcRow + (lo - g.padding + kx), count: hi - lo)
          (line + hi).update(repeating: 0, count: wo - hi)
        } else {
          for ox in 0..<wo {
            let ix = ox * g.stride - g.padding + kx
            line[ox] = ix >= 0 && ix < g.w ? srcRow[ix] : 0
          }
        }
      }
    }
  }
}

/// Plain-loop reference for `conv2d` (tests compare the two).
public func referenceConv2d(
  _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0
) -> Tensor {
  let g = ConvGeometry(input: x.shape, weight: weight.shape, stride: stride, padding: padding)
  var out = [Float](repeating: 0, count: g.n * g.o * g.ho * g.wo)
  for item in 0..<g.n {
    for oc in 0..<g.o {
      for oy in 0..<g.ho {
        for ox in 0..<g.wo {
          var sum = Double(bias?.scalars[oc] ?? 0)
          for ic in 0..<g.c {
            for ky in 0..<g.kh {
              for kx in 0..<g.kw {
                let iy = oy * stride - padding + ky
                let ix = ox * stride - padding + kx
                guard iy >= 0, iy < g.h, ix >= 0, ix < g.w else { continue }
                sum +=
                  Double(x.scalars[((item * g.c + ic) * g.h + iy) * g.w + ix])
                  * Double(weight.scalars[((oc * g.c + ic) * g.kh + ky) * g.kw + kx])
              }
            }
          }
          out[((item * g.o + oc) * g.ho + oy) * g.wo + ox] = Float(sum)
        }
      }
    }
  }
  return Tensor(shape: [g.n, g.o, g.ho, g.wo], scalars: out)
}

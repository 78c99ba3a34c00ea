// Tiled VAE decoding (diffusers' `AutoencoderKL.tiled_decode`): large latents are decoded in
// overlapping tiles whose overlaps are blended linearly, so decoding memory stays that of one
// tile while no seam shows. Legend: n batch, c channels, h/w sizes.

import SDTensor

extension AutoencoderKL {
  /// Decodes `latents` `[n, 4, h, w]` in tiles of `tile`×`tile` latents that overlap by
  /// `overlap` of a tile: each decoded tile's top and left `overlap · tile · 8` pixel rows and
  /// columns are blended linearly with its upper and left neighbours, then tiles are cropped to
  /// their `(1 − overlap)` part and joined.
  public func decodeTiled(
    _ latents: Tensor, tile: Int = 64, overlap: Float = 0.25, options: ComputeOptions
  ) -> Tensor {
    let (h, w) = (latents.shape[2], latents.shape[3])
    let factor = configuration.scaleFactor
    let step = Swift.max(1, Int(Float(tile) * (1 - overlap)))
    let sampleTile = tile * factor
    let blendExtent = Int(Float(sampleTile) * overlap)
    let keep = sampleTile - blendExtent
    var rows: [[Tensor]] = []
    for y in stride(from: 0, to: h, by: step) {
      var row: [Tensor] = []
      for x in stride(from: 0, to: w, by: step) {
        let part = crop(
          latents, top: y, left: x, height: Swift.min(tile, h - y), width: Swift.min(tile, w - x))
        row.append(decode(part, options: options))
      }
      rows.append(row)
    }
    var joinedRows: [Tensor] = []
    for i in rows.indices {
      var pieces: [Tensor] = []
      for j in rows[i].indices {
        // Blended tiles replace the decoded ones, so later neighbours blend with the blended
        // values, as diffusers' in-place blending does.
        var current = rows[i][j]
        if i > 0 {
          current = blend(rows[i - 1][j], into: current, extent: blendExtent, vertically: true)
        }
        if j > 0 {
          current = blend(rows[i][j - 1], into: current, extent: blendExtent, vertically: false)
        }
        rows[i][j] = current
        pieces.append(
          crop(
            current, top: 0, left: 0, height: Swift.min(keep, current.shape[2]),
            width: Swift.min(keep, current.shape[3])))
      }
      joinedRows.append(concatenate(pieces, axis: 3))
    }
    return concatenate(joinedRows, axis: 2)
  }
}

/// The `[n, c, height, width]` window of `x` at (top, left).
private func crop(_ x: Tensor, top: Int, left: Int, height: Int, width: Int) -> Tensor {
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  var out = [Float](repeating: 0, count: n * c * height * width)
  for plane in 0..<(n * c) {
    for row in 0..<height {
      let source = (plane * h + top + row) * w + left
      let target = (plane * height + row) * width
      out.replaceSubrange(target..<(target + width), with: x.scalars[source..<(source + width)])
    }
  }
  return Tensor(shape: [n, c, height, width], scalars: out)
}

/// b's first `extent` rows (`vertically`) or columns fade from a's last ones, its upper or
/// left neighbour: b[p] = a[A − e + p]·(1 − p/e) + b[p]·(p/e) along that axis.
private func blend(_ a: Tensor, into b: Tensor, extent: Int, vertically: Bool) -> Tensor {
  let (n, c, ha, wa) = (a.shape[0], a.shape[1], a.shape[2], a.shape[3])
  let (hb, wb) = (b.shape[2], b.shape[3])
  let e = Swift.min(extent, vertically ? Swift.min(ha, hb) : Swift.min(wa, wb))
  var out = b.scalars
  for plane in 0..<(n * c) {
    for y in 0..<(vertically ? e : Swift.min(ha, hb)) {
      for x in 0..<(vertically ? Swift.min(wa, wb) : e) {
        let t = Float(vertically ? y : x) / Float(e)
        let neighbour =
          vertically
          ? a.scalars[(plane * ha + ha - e + y) * wa + x]
          : a.scalars[(plane * ha + y) * wa + wa - e + x]
        let index = (plane * hb + y) * wb + x
        out[index] = neighbour * (1 - t) + out[index] * t
      }
    }
  }
  return Tensor(shape: b.shape, scalars: out)
}

// Applying LoRA updates to a model part: each update is matched to a layer by name (kohya's
// underscored paths in diffusers' or the original LDM block names, or diffusers' dotted paths),
// and W' = W + Σ scale · (α / r) · up · down is computed once, into a copy of that layer only. The
// model is then rebuilt from a store that reads the merged layers and everything else as before
// (in place in the file mapping). Merging costs one small product per layer at load and nothing
// per step; a per-call low-rank product would cost every step instead (see the README).

import SDTensor

/// A LoRA and the scale it is applied with (the web UIs' `<lora:name:0.8>`).
public struct ScaledLoRA: Sendable {
  /// The adapter.
  public let lora: LoRA
  /// The multiplier of each update: W' = W + scale · (α / r) · up · down (1 = as trained).
  public let scale: Float

  /// `lora` applied with `scale` (default 1, the web UIs' `<lora:name>`).
  public init(_ lora: LoRA, scale: Float = 1) {
    self.lora = lora
    self.scale = scale
  }
}

/// The result of merging adapters into one model part.
public struct LoRAMerge: Sendable {
  /// The part's store with the merged layers in place of the originals.
  public let weights: WeightStore
  /// How many layers were changed.
  public let mergedLayers: Int
  /// Updates that name no layer of the part (only with `ignoringUnknownLayers`), as file keys.
  public let unknownKeys: [String]

  /// Merges the updates of `adapters` for `part` into `store`. `unet` gives the UNet's
  /// configuration, so that files in the original LDM block names can be matched too.
  /// - Throws: `ModelError.invalidLoRA` naming the file and key of an update that names no layer
  ///   (unless `ignoringUnknownLayers`) or whose shape does not fit its layer.
  public init(
    _ adapters: [ScaledLoRA], part: LoRA.Part, into store: WeightStore,
    unet: UNetConfiguration? = nil, ignoringUnknownLayers: Bool = false
  ) throws(ModelError) {
    let targets = LayerNames(store: store, unet: unet)
    var merged: [String: (shape: [Int], values: Tensor)] = [:]
    var unknown: [String] = []
    let options = ComputeOptions()
    for adapter in adapters {
      for update in adapter.lora.updates where update.part == part {
        func fail(_ reason: String) -> ModelError {
          .invalidLoRA(file: adapter.lora.path, key: update.key, reason: reason)
        }
        // A store that lists no shapes (synthetic weights) takes the update's own.
        guard let key = targets.weightKey(of: update),
          let shape = store.shape(of: key)
            ?? (store.contains(key) ? [update.up.shape[0]] + update.down.shape.dropFirst() : nil)
        else {
          if ignoringUnknownLayers {
            unknown.append(update.key)
            continue
          }
          throw fail("names no layer of the model's \(part.rawValue) (a LoRA for another model?)")
        }
        let (out, inner) = (shape[0], shape.dropFirst().reduce(1, *))
        guard update.up.shape[0] == out, update.down.count / update.rank == inner else {
          throw fail(
            "does not fit its layer: down \(update.down.shape), up \(update.up.shape) for a weight of shape \(shape)"
          )
        }
        var values: Tensor
        if let earlier = merged[key] {
          values = earlier.values
        } else {
          do { values = try store.weight(key, shape: shape).float(options: options) } catch {
            throw .weights(error)
          }
        }
        let delta = matmul(
          update.up.reshaped([out, update.rank]), update.down.reshaped([update.rank, inner]),
          alpha: adapter.scale * update.alpha / Float(update.rank), options: options)
        values.add(delta.reshaped(shape))
        merged[key] = (shape, values)
      }
    }
    var replacements: [String: Weight] = [:]
    for (key, layer) in merged {
      replacements[key] =
        store.keepsHalfPrecision
        ? Weight(shape: layer.shape, halfBits: layer.values.scalars.map { Float16($0).bitPattern })
        : Weight(layer.values.reshaped(layer.shape))
    }
    weights = WeightStore(store, replacing: replacements)
    mergedLayers = merged.count
    unknownKeys = unknown
  }
}

/// The layers of a model part under every spelling a LoRA file may use: the weight key of each
/// 2-D or 4-D `.weight`, by its dotted module path and its underscored one, with and without
/// CLIP's `text_model.` level (transformers 5 drops it, kohya files keep it), and for the UNet
/// also by the original LDM path (`input_blocks.1.1.proj_in`).
private struct LayerNames {
  private var dotted: [String: String] = [:]
  private var underscored: [String: String] = [:]
  private let store: WeightStore

  init(store: WeightStore, unet: UNetConfiguration?) {
    self.store = store
    var originals: [String: String] = [:]
    if let unet {
      let prefix = "model.diffusion_model."
      for (key, source) in SingleFileCheckpoint.unetKeyMap(unet)
      where source.storedName.hasPrefix(prefix) && source.storedName.hasSuffix(".weight") {
        originals[key] = String(source.storedName.dropFirst(prefix.count).dropLast(7))
      }
    }
    for key in store.keys where key.hasSuffix(".weight") {
      guard let rank = store.shape(of: key)?.count, rank == 2 || rank == 4 else { continue }
      let layer = Self.withoutTextModel(String(key.dropLast(7)))
      dotted[layer] = key
      underscored[layer.replacingOccurrences(of: ".", with: "_")] = key
      if let original = originals[key] {
        underscored[original.replacingOccurrences(of: ".", with: "_")] = key
      }
    }
  }

  func weightKey(of update: LoRA.Update) -> String? {
    let layer = Self.withoutTextModel(update.layer)
    switch update.naming {
    case .dotted:
      // A store that cannot list its keys (synthetic weights) is asked by name.
      return dotted[layer]
        ?? (store.contains(update.layer + ".weight") ? update.layer + ".weight" : nil)
    case .underscored: return underscored[layer]
    }
  }

  private static func withoutTextModel(_ layer: String) -> String {
    for prefix in ["text_model.", "text_model_"] where layer.hasPrefix(prefix) {
      return String(layer.dropFirst(prefix.count))
    }
    return layer
  }
}

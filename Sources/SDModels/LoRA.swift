// LoRA adapter files as people download them, read into one form: per layer a low-rank update
// W' = W + scale · (α / r) · up · down. Layouts read (the names diffusers' lora_conversion_utils.py
// and kohya's sd-scripts write):
//   kohya / AUTOMATIC1111:  lora_unet_<layer>.lora_down.weight, .lora_up.weight, optional .alpha;
//                           lora_te_ (lora_te1_, lora_te2_ for the second encoder) for the text
//                           encoder; layer names are module paths with `_` for `.`, in diffusers'
//                           block names or the original LDM ones (input_blocks_1_1_...); linear
//                           layers and LoCon convolutions (3×3 or 1×1 down, 1×1 up)
//   diffusers / PEFT:       unet.<module>.lora_A.weight / lora_B.weight, text_encoder.<module>...,
//                           α from the file's `lora_adapter_metadata` (lora_alpha, r,
//                           alpha_pattern), else α = r
//   diffusers, older:       <part>.<module>.lora.down.weight / .lora.up.weight,
//                           .lora_linear_layer.down/up, attn1.processor.to_q_lora.down.weight
// Which model layer an update belongs to is decided when it is applied (LoRA+Merge.swift).

import Foundation
import SDTensor

/// A LoRA adapter: low-rank updates of model layers.
public struct LoRA: Sendable {
  /// The model part an update belongs to.
  public enum Part: String, Sendable, CaseIterable {
    /// The UNet (`lora_unet_`, `unet.`).
    case unet
    /// The (first) CLIP text encoder (`lora_te_`, `lora_te1_`, `text_encoder.`).
    case textEncoder = "text_encoder"
    /// SDXL's second text encoder (`lora_te2_`, `text_encoder_2.`); SD 1.x/2.x models have none.
    case textEncoder2 = "text_encoder_2"
  }

  /// How a file names its layers.
  public enum Naming: Sendable {
    /// Module paths with `_` in place of `.` (kohya).
    case underscored
    /// Module paths with dots (diffusers / PEFT).
    case dotted
  }

  /// One layer's update: ΔW = (α / r) · up · down, r = down's first dimension.
  public struct Update: Sendable {
    /// The model part the layer is in, from the key's prefix.
    public let part: Part
    /// The layer as the file names it, without the part prefix (`down_blocks_0_..._to_q`).
    public let layer: String
    /// Whether `layer` is written with underscores (kohya) or dots (diffusers / PEFT).
    public let naming: Naming
    /// The key of its down half in the file, for messages.
    public let key: String
    /// `[r, in]` or `[r, in, kh, kw]`.
    public let down: Tensor
    /// `[out, r]` or `[out, r, 1, 1]`.
    public let up: Tensor
    /// α of ΔW = (α / r) · up · down: the file's `.alpha`, else the PEFT metadata's, else r.
    public let alpha: Float

    /// r, the inner dimension of the update (down's first extent).
    public var rank: Int { down.shape[0] }

    /// An update of exactly these fields, as the file reader builds it (no checks).
    public init(
      part: Part, layer: String, naming: Naming, key: String, down: Tensor, up: Tensor,
      alpha: Float
    ) {
      (self.part, self.layer, self.naming, self.key) = (part, layer, naming, key)
      (self.down, self.up, self.alpha) = (down, up, alpha)
    }
  }

  /// An adapter made in memory (the benchmark's synthetic one, or a library user's).
  public init(name: String, path: String = "<memory>", updates: [Update]) {
    (self.name, self.path, self.updates) = (name, path, updates)
  }

  /// The file it was read from.
  public let path: String
  /// Its name in prompts and in PNG parameters: the file name without `.safetensors`.
  public let name: String
  /// One update per layer the file changes, sorted by part and layer name.
  public let updates: [Update]

  /// Reads a LoRA safetensors file.
  /// - Throws: `ModelError.invalidLoRA` naming the file and key: a half without its other half,
  ///   a rank that differs between the halves, a non-finite value, a key of no layout above,
  ///   or an adapter kind this runtime does not apply (DoRA, LoHa, LoKr, Tucker LoCon).
  public init(contentsOf url: URL) throws(ModelError) {
    path = url.path
    name = url.deletingPathExtension().lastPathComponent
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: url.path) } catch { throw .weights(error) }
    func fail(_ key: String, _ reason: String) -> ModelError {
      .invalidLoRA(file: url.path, key: key, reason: reason)
    }
    let metadataAlphas = try Self.metadataAlphas(file, fail: fail)
    // Group the keys by layer: (part, layer, naming) -> halves and alpha.
    struct Halves {
      var down: (key: String, tensor: Tensor)?
      var up: (key: String, tensor: Tensor)?
      var alpha: Float?
    }
    var layers: [String: (part: Part, layer: String, naming: Naming, halves: Halves)] = [:]
    for key in file.names {
      guard let parsed = Self.parse(key) else {
        throw fail(key, Self.unsupportedReason(key))
      }
      let id = "\(parsed.part.rawValue)|\(parsed.layer)"
      var entry = layers[id] ?? (parsed.part, parsed.layer, parsed.naming, Halves())
      let tensor: Tensor
      do { tensor = try file.tensor(key) } catch { throw .weights(error) }
      guard tensor.scalars.allSatisfy(\.isFinite) else {
        throw fail(key, "holds a NaN or infinite value")
      }
      switch parsed.role {
      case .down: entry.halves.down = (key, tensor)
      case .up: entry.halves.up = (key, tensor)
      case .alpha:
        guard tensor.count == 1, let value = tensor.scalars.first, value > 0 else {
          throw fail(key, "must be one positive number")
        }
        entry.halves.alpha = value
      }
      layers[id] = entry
    }
    var updates: [Update] = []
    for id in layers.keys.sorted() {
      guard let entry = layers[id] else { continue }
      guard let down = entry.halves.down else {
        throw fail(entry.halves.up?.key ?? id, "has no matching down (lora_down / lora_A) half")
      }
      guard let up = entry.halves.up else {
        throw fail(down.key, "has no matching up (lora_up / lora_B) half")
      }
      guard [2, 4].contains(down.tensor.rank), [2, 4].contains(up.tensor.rank) else {
        throw fail(down.key, "must be 2-D (linear) or 4-D (convolution), is \(down.tensor.shape)")
      }
      let rank = down.tensor.shape[0]
      guard rank > 0, up.tensor.shape[1] == rank,
        up.tensor.shape.dropFirst(2).allSatisfy({ $0 == 1 })
      else {
        throw fail(
          up.key,
          "rank mismatch: down \(down.tensor.shape) and up \(up.tensor.shape) (up must be [out, \(rank)] or [out, \(rank), 1, 1])"
        )
      }
      let alpha =
        entry.halves.alpha ?? metadataAlphas(entry.part, entry.layer, rank) ?? Float(rank)
      updates.append(
        Update(
          part: entry.part, layer: entry.layer, naming: entry.naming, key: down.key,
          down: down.tensor, up: up.tensor, alpha: alpha))
    }
    guard !updates.isEmpty else { throw fail("-", "holds no LoRA update") }
    self.updates = updates
  }

  private enum Role { case down, up, alpha }

  /// The part, layer, naming and role of a key, or nil for a key of no layout this reads.
  private static func parse(_ key: String) -> (
    part: Part, layer: String, naming: Naming, role: Role
  )? {
    for (prefix, part) in [
      ("lora_unet_", Part.unet), ("lora_te1_", .textEncoder), ("lora_te2_", .textEncoder2),
      ("lora_te_", .textEncoder),
    ] where key.hasPrefix(prefix) {
      let rest = key.dropFirst(prefix.count)
      for (suffix, role) in [
        (".lora_down.weight", Role.down), (".lora_up.weight", .up), (".alpha", .alpha),
      ] where rest.hasSuffix(suffix) {
        return (part, String(rest.dropLast(suffix.count)), .underscored, role)
      }
      return nil
    }
    // Dotted layouts: `<part>.<module><suffix>`, longest part name first.
    for part in [Part.textEncoder2, .textEncoder, .unet] where key.hasPrefix(part.rawValue + ".") {
      var module = String(key.dropFirst(part.rawValue.count + 1))
      var role: Role?
      for (suffix, found) in [
        (".lora_A.weight", Role.down), (".lora_B.weight", .up), (".lora.down.weight", .down),
        (".lora.up.weight", .up), (".lora_linear_layer.down.weight", .down),
        (".lora_linear_layer.up.weight", .up), (".alpha", .alpha),
      ] where module.hasSuffix(suffix) {
        module.removeLast(suffix.count)
        role = found
        break
      }
      // Attention-processor spelling: `attn1.processor.to_q_lora.down.weight`.
      if role == nil {
        for (suffix, found) in [("_lora.down.weight", Role.down), ("_lora.up.weight", .up)]
        where module.hasSuffix(suffix) {
          module.removeLast(suffix.count)
          module = module.replacingOccurrences(of: ".processor.", with: ".")
          if module.hasSuffix(".to_out") { module += ".0" }
          role = found
        }
      }
      guard let role else { return nil }
      return (part, module, .dotted, role)
    }
    return nil
  }

  /// Why `key` is not read: the adapter kinds this runtime does not apply are named.
  private static func unsupportedReason(_ key: String) -> String {
    if key.contains("dora_scale") || key.contains("lora_magnitude_vector") {
      return "DoRA adapters are not supported (only plain LoRA / LoCon)"
    }
    if key.contains("hada_") { return "LoHa (LyCORIS) adapters are not supported" }
    if key.contains("lokr_") { return "LoKr (LyCORIS) adapters are not supported" }
    if key.contains("lora_mid") { return "Tucker-decomposed LoCon (lora_mid) is not supported" }
    return
      "is not a LoRA key (expected lora_unet_/lora_te_… with .lora_down/.lora_up/.alpha, or unet./text_encoder.… with lora_A/lora_B)"
  }

  /// α per layer from diffusers' `lora_adapter_metadata` (PEFT's LoraConfig per part:
  /// `lora_alpha`, `alpha_pattern` by module-name suffix, `use_rslora` for α/√r).
  private static func metadataAlphas(
    _ file: SafeTensorsFile, fail: (String, String) -> ModelError
  ) throws(ModelError) -> (Part, String, Int) -> Float? {
    guard let text = file.metadata["lora_adapter_metadata"] else { return { _, _, _ in nil } }
    let json: JSONValue
    do { json = try JSONValue.parse(Array(text.utf8), allowingNonFiniteNumbers: true) } catch {
      throw fail("__metadata__.lora_adapter_metadata", error.description)
    }
    for part in Part.allCases where json["\(part.rawValue).use_dora"]?.boolValue == true {
      throw fail("__metadata__.lora_adapter_metadata", "DoRA adapters are not supported")
    }
    return { part, layer, rank in
      let prefix = part.rawValue
      var alpha = json["\(prefix).lora_alpha"]?.doubleValue.map { Float($0) }
      if let patterns = json["\(prefix).alpha_pattern"]?.objectValue {
        for (pattern, value) in patterns where layer == pattern || layer.hasSuffix("." + pattern) {
          alpha = value.doubleValue.map { Float($0) }
        }
      }
      guard let alpha else { return nil }
      // rsLoRA scales by α/√r instead of α/r; returned as the α that gives that scale with /r.
      if json["\(prefix).use_rslora"]?.boolValue == true {
        return alpha * Float(rank).squareRoot()
      }
      return alpha
    }
  }
}

// Single-file checkpoints in the original CompVis/LDM layout (`v1-5-pruned-emaonly.safetensors`:
// `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`), mapped
// onto the diffusers key names the models read. One table, generated from the configuration, so
// the models keep a single spelling (the mapping follows diffusers'
// scripts/convert_original_stable_diffusion_to_diffusers.py). SDXL files
// (`sd_xl_base_1.0.safetensors`) keep the UNet and VAE layouts and put their two text encoders
// under `conditioner.embedders.0.transformer.*` (CLIP ViT-L, transformers' names) and
// `conditioner.embedders.1.model.*` (OpenCLIP ViT-bigG, open_clip's names), read as diffusers'
// loaders/single_file_utils.py reads them.

import Foundation
import SDTensor

/// An SD 1.x or SDXL single-file checkpoint opened as one weight store per model part, each
/// presenting the diffusers key names.
public struct SingleFileCheckpoint: Sendable {
  /// The model families a single file may hold, told apart by their text encoders' keys.
  public enum Family: Sendable, Equatable {
    /// SD 1.x: one CLIP ViT-L text encoder under `cond_stage_model.transformer.`.
    case stableDiffusion1
    /// SDXL base: CLIP ViT-L under `conditioner.embedders.0.transformer.` and OpenCLIP
    /// ViT-bigG under `conditioner.embedders.1.model.`.
    case stableDiffusionXL
  }

  /// The text encoder (CLIP ViT-L): `cond_stage_model.transformer.*`, or SDXL's
  /// `conditioner.embedders.0.transformer.*`, under transformers' `CLIPTextModel` keys.
  public let textEncoder: WeightStore
  /// SDXL's second text encoder: `conditioner.embedders.1.model.*` (OpenCLIP ViT-bigG) under
  /// transformers' `CLIPTextModelWithProjection` keys; nil for SD 1.x.
  public let textEncoder2: WeightStore?
  /// `model.diffusion_model.*` under diffusers' `UNet2DConditionModel` keys.
  public let unet: WeightStore
  /// `first_stage_model.*` under diffusers' `AutoencoderKL` keys.
  public let vae: WeightStore
  /// The checkpoint file, as given.
  public let path: String
  /// The family its keys say it is.
  public let family: Family

  /// Where SDXL keeps its OpenCLIP text encoder.
  static let openCLIPPrefix = "conditioner.embedders.1.model."

  /// The family of a checkpoint holding tensors of these names: SDXL when any is under
  /// `conditioner.embedders.1.model.` (its OpenCLIP encoder), SD 1.x otherwise. diffusers
  /// (`infer_diffusers_model_type`) looks for one key of it,
  /// `conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias`, which a text
  /// encoder of fewer than 10 layers lacks; the prefix also finds those.
  public static func family(ofTensorNames names: some Sequence<String>) -> Family {
    names.contains { $0.hasPrefix(openCLIPPrefix) } ? .stableDiffusionXL : .stableDiffusion1
  }

  /// Opens `path` (safetensors) for models of the given configurations; with
  /// `keepsHalfPrecision` the layer weights stay in half precision. `textEncoder2` is the
  /// configuration of SDXL's second text encoder, required for an SDXL file.
  /// - Throws: `ModelError.weights` for an unreadable file, `.invalidConfiguration` for a file
  ///   that is not an SD 1.x or SDXL single-file checkpoint (SD 2.x's OpenCLIP text encoder,
  ///   an SDXL refiner, a LoRA, ...).
  public init(
    path: String, textEncoder textConfig: CLIPTextConfiguration,
    textEncoder2 textConfig2: CLIPTextConfiguration? = nil, unet unetConfig: UNetConfiguration,
    vae vaeConfig: AutoencoderConfiguration, keepsHalfPrecision: Bool = false
  ) throws(ModelError) {
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: path) } catch { throw .weights(error) }
    try self.init(
      file: file, textEncoder: textConfig, textEncoder2: textConfig2, unet: unetConfig,
      vae: vaeConfig, keepsHalfPrecision: keepsHalfPrecision)
  }

  /// Reads the opened `file` as `init(path:...)` reads its path (for a caller that looked at
  /// its keys first, to pick the configurations of its `family(ofTensorNames:)`).
  /// - Throws: as `init(path:...)`.
  public init(
    file: SafeTensorsFile, textEncoder textConfig: CLIPTextConfiguration,
    textEncoder2 textConfig2: CLIPTextConfiguration? = nil, unet unetConfig: UNetConfiguration,
    vae vaeConfig: AutoencoderConfiguration, keepsHalfPrecision: Bool = false
  ) throws(ModelError) {
    let path = file.path
    let names = Set(file.names)
    if names.contains("cond_stage_model.model.token_embedding.weight") {
      throw .invalidConfiguration(
        file: path,
        reason:
          "an SD 2.x checkpoint (OpenCLIP text encoder); single files are read for SD 1.x and SDXL only, use the diffusers folder of this model"
      )
    }
    // diffusers' "xl_refiner": the refiner's OpenCLIP encoder is embedder 0.
    if names.contains(where: { $0.hasPrefix("conditioner.embedders.0.model.") }) {
      throw .invalidConfiguration(
        file: path,
        reason:
          "an SDXL refiner checkpoint (its only text encoder is OpenCLIP); single files are read for SD 1.x and SDXL base only"
      )
    }
    family = Self.family(ofTensorNames: names)
    let textBase =
      family == .stableDiffusionXL
      ? "conditioner.embedders.0.transformer." : "cond_stage_model.transformer."
    for prefix in ["model.diffusion_model.", "first_stage_model.", textBase]
      + (family == .stableDiffusionXL ? [Self.openCLIPPrefix] : [])
    where !names.contains(where: { $0.hasPrefix(prefix) }) {
      throw .invalidConfiguration(
        file: path, reason: "no \(prefix)* tensors: not a single-file Stable Diffusion checkpoint")
    }
    // Older checkpoints (transformers < 4.x) lack the `text_model.` level.
    let textPrefix =
      names.contains("\(textBase)text_model.embeddings.token_embedding.weight")
      ? "\(textBase)text_model." : textBase
    let openCLIPConfig: CLIPTextConfiguration?
    switch (family, textConfig2) {
    case (.stableDiffusion1, _): openCLIPConfig = nil
    case (.stableDiffusionXL, let config?): openCLIPConfig = config
    case (.stableDiffusionXL, nil):
      throw .invalidConfiguration(
        file: path,
        reason: "an SDXL checkpoint, opened without its second text encoder's configuration")
    }
    do {
      textEncoder = try WeightStore(
        files: [file], keyMap: Self.textEncoderKeyMap(textConfig, storedPrefix: textPrefix),
        keepsHalfPrecision: keepsHalfPrecision)
      textEncoder2 = try openCLIPConfig.map { config throws(WeightError) in
        try WeightStore(
          files: [file],
          keyMap: Self.openCLIPTextEncoderKeyMap(config, storedPrefix: Self.openCLIPPrefix),
          keepsHalfPrecision: keepsHalfPrecision)
      }
      unet = try WeightStore(
        files: [file], keyMap: Self.unetKeyMap(unetConfig), keepsHalfPrecision: keepsHalfPrecision)
      vae = try WeightStore(
        files: [file], keyMap: Self.vaeKeyMap(vaeConfig), keepsHalfPrecision: keepsHalfPrecision)
    } catch {
      throw .weights(error)
    }
    self.path = path
  }

  /// Tensors of the model parts that no model read (after building them): a sign of a
  /// checkpoint for another architecture. CLIP's `position_ids` buffer and OpenCLIP's
  /// `logit_scale` (the contrastive temperature, which no text encoding reads) are not
  /// counted; diffusers' converter drops them too.
  public func unusedKeys() -> [String] {
    let textBase =
      family == .stableDiffusionXL
      ? "conditioner.embedders.0.transformer." : "cond_stage_model.transformer."
    return
      (unet.unreadKeys(prefix: "model.diffusion_model.")
      + vae.unreadKeys(prefix: "first_stage_model.") + textEncoder.unreadKeys(prefix: textBase)
      + (textEncoder2?.unreadKeys(prefix: Self.openCLIPPrefix) ?? [])).filter {
        !$0.hasSuffix("position_ids") && $0 != "\(Self.openCLIPPrefix)logit_scale"
      }
  }

  /// UNet keys: diffusers name -> `model.diffusion_model.` name.
  public static func unetKeyMap(_ config: UNetConfiguration) -> [String: WeightStore.Source] {
    var map: [String: String] = [:]
    let prefix = "model.diffusion_model."
    func layer(_ diffusers: String, _ original: String, _ suffixes: [String] = ["weight", "bias"]) {
      for suffix in suffixes { map["\(diffusers).\(suffix)"] = "\(prefix)\(original).\(suffix)" }
    }
    func resnet(_ diffusers: String, _ original: String) {
      for (new, old) in [
        ("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
        ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"),
      ] {
        layer("\(diffusers).\(new)", "\(original).\(old)")
      }
    }
    func transformer(_ diffusers: String, _ original: String, layers: Int) {
      // Inside a transformer the two layouts use the same names.
      for name in ["norm", "proj_in", "proj_out"] {
        layer("\(diffusers).\(name)", "\(original).\(name)")
      }
      for block in 0..<layers {
        let b = "transformer_blocks.\(block)"
        for name in [
          "norm1", "norm2", "norm3", "attn1.to_out.0", "attn2.to_out.0", "ff.net.0.proj",
          "ff.net.2",
        ] {
          layer("\(diffusers).\(b).\(name)", "\(original).\(b).\(name)")
        }
        for name in [
          "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q", "attn2.to_k", "attn2.to_v",
        ] {
          layer("\(diffusers).\(b).\(name)", "\(original).\(b).\(name)", ["weight"])
        }
      }
    }
    layer("time_embedding.linear_1", "time_embed.0")
    layer("time_embedding.linear_2", "time_embed.2")
    if config.textTimeEmbedding != nil {
      // SDXL's added embedding is the original `label_emb.0`, a Sequential of Linear, SiLU,
      // Linear (diffusers' DIFFUSERS_TO_LDM_MAPPING "addition_embed_type").
      layer("add_embedding.linear_1", "label_emb.0.0")
      layer("add_embedding.linear_2", "label_emb.0.2")
    }
    layer("conv_in", "input_blocks.0.0")
    layer("conv_norm_out", "out.0")
    layer("conv_out", "out.2")
    let perBlock = config.layersPerBlock + 1
    let blocks = config.blockOutChannels.count
    for (i, hasAttention) in config.downBlockHasAttention.enumerated() {
      for j in 0..<config.layersPerBlock {
        let input = 1 + i * perBlock + j
        resnet("down_blocks.\(i).resnets.\(j)", "input_blocks.\(input).0")
        if hasAttention {
          transformer(
            "down_blocks.\(i).attentions.\(j)", "input_blocks.\(input).1",
            layers: config.transformerLayersPerBlock[i])
        }
      }
      if i < blocks - 1 {
        layer("down_blocks.\(i).downsamplers.0.conv", "input_blocks.\((i + 1) * perBlock).0.op")
      }
    }
    resnet("mid_block.resnets.0", "middle_block.0")
    transformer(
      "mid_block.attentions.0", "middle_block.1",
      layers: config.transformerLayersPerBlock[blocks - 1])
    resnet("mid_block.resnets.1", "middle_block.2")
    for (i, hasAttention) in config.upBlockHasAttention.enumerated() {
      for j in 0..<perBlock {
        let output = i * perBlock + j
        resnet("up_blocks.\(i).resnets.\(j)", "output_blocks.\(output).0")
        if hasAttention {
          transformer(
            "up_blocks.\(i).attentions.\(j)", "output_blocks.\(output).1",
            layers: config.transformerLayersPerBlock[blocks - 1 - i])
        }
      }
      if i < blocks - 1 {
        layer(
          "up_blocks.\(i).upsamplers.0.conv",
          "output_blocks.\(i * perBlock + perBlock - 1).\(hasAttention ? 2 : 1).conv")
      }
    }
    return map.mapValues { WeightStore.Source(storedName: $0) }
  }

  /// VAE keys: diffusers name -> `first_stage_model.` name. The original mid-block attention
  /// stores its projections as 1×1 convolutions, read here as the linear weights they are.
  public static func vaeKeyMap(_ config: AutoencoderConfiguration) -> [String: WeightStore.Source] {
    var map: [String: WeightStore.Source] = [:]
    let prefix = "first_stage_model."
    func layer(_ diffusers: String, _ original: String, reshape: Bool = false) {
      map["\(diffusers).weight"] = .init(
        storedName: "\(prefix)\(original).weight", allowsReshape: reshape)
      map["\(diffusers).bias"] = .init(storedName: "\(prefix)\(original).bias")
    }
    func resnet(_ diffusers: String, _ original: String) {
      for name in ["norm1", "conv1", "norm2", "conv2"] {
        layer("\(diffusers).\(name)", "\(original).\(name)")
      }
      layer("\(diffusers).conv_shortcut", "\(original).nin_shortcut")
    }
    func mid(_ part: String) {
      resnet("\(part).mid_block.resnets.0", "\(part).mid.block_1")
      resnet("\(part).mid_block.resnets.1", "\(part).mid.block_2")
      let attention = "\(part).mid_block.attentions.0"
      layer("\(attention).group_norm", "\(part).mid.attn_1.norm")
      for (new, old) in [("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")] {
        layer("\(attention).\(new)", "\(part).mid.attn_1.\(old)", reshape: true)
      }
    }
    for name in [
      "encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out", "quant_conv",
      "post_quant_conv",
    ] {
      layer(name, name)
    }
    layer("encoder.conv_norm_out", "encoder.norm_out")
    layer("decoder.conv_norm_out", "decoder.norm_out")
    let blocks = config.blockOutChannels.count
    for i in 0..<blocks {
      for j in 0..<config.layersPerBlock {
        resnet("encoder.down_blocks.\(i).resnets.\(j)", "encoder.down.\(i).block.\(j)")
      }
      if i < blocks - 1 {
        layer("encoder.down_blocks.\(i).downsamplers.0.conv", "encoder.down.\(i).downsample.conv")
      }
      // The original decoder numbers its levels from the bottom: up.(blocks-1) runs first.
      let level = blocks - 1 - i
      for j in 0...config.layersPerBlock {
        resnet("decoder.up_blocks.\(i).resnets.\(j)", "decoder.up.\(level).block.\(j)")
      }
      if i < blocks - 1 {
        layer("decoder.up_blocks.\(i).upsamplers.0.conv", "decoder.up.\(level).upsample.conv")
      }
    }
    mid("encoder")
    mid("decoder")
    return map
  }

  /// Text-encoder keys: the transformers names under `storedPrefix`.
  public static func textEncoderKeyMap(_ config: CLIPTextConfiguration, storedPrefix: String)
    -> [String: WeightStore.Source]
  {
    var names = [
      "embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
      "final_layer_norm.weight", "final_layer_norm.bias",
    ]
    for index in 0..<config.layerCount {
      for part in [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
        "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2",
      ] {
        names += ["encoder.layers.\(index).\(part).weight", "encoder.layers.\(index).\(part).bias"]
      }
    }
    var map: [String: WeightStore.Source] = [:]
    for name in names {
      map["text_model.\(name)"] = .init(storedName: "\(storedPrefix)\(name)")
    }
    return map
  }

  /// OpenCLIP text-encoder keys (open_clip's names under `storedPrefix`, SDXL's
  /// `conditioner.embedders.1.model.`) for transformers' `CLIPTextModelWithProjection`, by the
  /// rules of diffusers' `convert_open_clip_checkpoint`: `resblocks.<i>` = `encoder.layers.<i>`,
  /// `ln_1`/`ln_2` = `layer_norm1`/`layer_norm2`, `mlp.c_fc`/`mlp.c_proj` = `mlp.fc1`/`mlp.fc2`,
  /// `ln_final` = `final_layer_norm`; each layer's `attn.in_proj_weight` `[3·d, d]` (and
  /// `_bias` `[3·d]`) stacks q, k, v, so rows 0..<d are `q_proj`, d..<2d `k_proj`, 2d..<3d
  /// `v_proj`; `text_projection` `[d, projection]` is applied as x·P, so the Linear weight
  /// `text_projection.weight` is its transpose.
  public static func openCLIPTextEncoderKeyMap(
    _ config: CLIPTextConfiguration, storedPrefix: String
  ) -> [String: WeightStore.Source] {
    var map: [String: WeightStore.Source] = [:]
    func name(
      _ diffusers: String, _ original: String, rows: Range<Int>? = nil, transposed: Bool = false
    ) {
      map[diffusers] = .init(
        storedName: "\(storedPrefix)\(original)", rows: rows, isTransposed: transposed)
    }
    name("text_model.embeddings.token_embedding.weight", "token_embedding.weight")
    name("text_model.embeddings.position_embedding.weight", "positional_embedding")
    name("text_model.final_layer_norm.weight", "ln_final.weight")
    name("text_model.final_layer_norm.bias", "ln_final.bias")
    name("text_projection.weight", "text_projection", transposed: true)
    let width = config.hiddenSize
    for index in 0..<config.layerCount {
      let (layer, block) = ("text_model.encoder.layers.\(index)", "transformer.resblocks.\(index)")
      for suffix in ["weight", "bias"] {
        for (new, old) in [
          ("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
          ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
        ] {
          name("\(layer).\(new).\(suffix)", "\(block).\(old).\(suffix)")
        }
        for (third, projection) in ["q_proj", "k_proj", "v_proj"].enumerated() {
          name(
            "\(layer).self_attn.\(projection).\(suffix)", "\(block).attn.in_proj_\(suffix)",
            rows: third * width..<(third + 1) * width)
        }
      }
    }
    return map
  }
}

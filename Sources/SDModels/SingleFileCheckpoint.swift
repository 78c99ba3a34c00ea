// Single-file checkpoints in the original CompVis/LDM layout (`v1-5-pruned-emaonly.safetensors`:
// `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`), mapped
// onto the diffusers key names the models read. One table, generated from the configuration, so
// the models keep a single spelling (the mapping follows diffusers'
// scripts/convert_original_stable_diffusion_to_diffusers.py).

import Foundation
import SDTensor

/// An SD 1.x single-file checkpoint opened as three weight stores, one per model part, each
/// presenting the diffusers key names.
public struct SingleFileCheckpoint: Sendable {
  /// `cond_stage_model.transformer.*` under transformers' `CLIPTextModel` keys.
  public let textEncoder: WeightStore
  /// `model.diffusion_model.*` under diffusers' `UNet2DConditionModel` keys.
  public let unet: WeightStore
  /// `first_stage_model.*` under diffusers' `AutoencoderKL` keys.
  public let vae: WeightStore
  /// The checkpoint file, as given.
  public let path: String

  /// Opens `path` (safetensors) for models of the given configurations; with
  /// `keepsHalfPrecision` the layer weights stay in half precision.
  /// - Throws: `ModelError.weights` for an unreadable file, `.invalidConfiguration` for a file
  ///   that is not an SD 1.x single-file checkpoint (SD 2.x's OpenCLIP text encoder, a LoRA, ...).
  public init(
    path: String, textEncoder textConfig: CLIPTextConfiguration, unet unetConfig: UNetConfiguration,
    vae vaeConfig: AutoencoderConfiguration, keepsHalfPrecision: Bool = false
  ) throws(ModelError) {
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: path) } catch { throw .weights(error) }
    let names = Set(file.names)
    if names.contains("cond_stage_model.model.token_embedding.weight") {
      throw .invalidConfiguration(
        file: path,
        reason:
          "an SD 2.x checkpoint (OpenCLIP text encoder); single files are read for SD 1.x only, use the diffusers folder of this model"
      )
    }
    for prefix in ["model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."]
    where !names.contains(where: { $0.hasPrefix(prefix) }) {
      throw .invalidConfiguration(
        file: path, reason: "no \(prefix)* tensors: not a single-file Stable Diffusion checkpoint")
    }
    // Older checkpoints (transformers < 4.x) lack the `text_model.` level.
    let textPrefix =
      names.contains("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
      ? "cond_stage_model.transformer.text_model." : "cond_stage_model.transformer."
    do {
      textEncoder = try WeightStore(
        files: [file], keyMap: Self.textEncoderKeyMap(textConfig, storedPrefix: textPrefix),
        keepsHalfPrecision: keepsHalfPrecision)
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
  /// checkpoint for another architecture.
  public func unusedKeys() -> [String] {
    (unet.unreadKeys(prefix: "model.diffusion_model.")
      + vae.unreadKeys(prefix: "first_stage_model.")
      + textEncoder.unreadKeys(prefix: "cond_stage_model.transformer.")).filter {
        !$0.hasSuffix("position_ids")
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
    func transformer(_ diffusers: String, _ original: String) {
      // Inside a transformer the two layouts use the same names.
      for name in ["norm", "proj_in", "proj_out"] {
        layer("\(diffusers).\(name)", "\(original).\(name)")
      }
      for block in 0..<config.transformerLayersPerBlock {
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
          transformer("down_blocks.\(i).attentions.\(j)", "input_blocks.\(input).1")
        }
      }
      if i < blocks - 1 {
        layer("down_blocks.\(i).downsamplers.0.conv", "input_blocks.\((i + 1) * perBlock).0.op")
      }
    }
    resnet("mid_block.resnets.0", "middle_block.0")
    transformer("mid_block.attentions.0", "middle_block.1")
    resnet("mid_block.resnets.1", "middle_block.2")
    for (i, hasAttention) in config.upBlockHasAttention.enumerated() {
      for j in 0..<perBlock {
        let output = i * perBlock + j
        resnet("up_blocks.\(i).resnets.\(j)", "output_blocks.\(output).0")
        if hasAttention {
          transformer("up_blocks.\(i).attentions.\(j)", "output_blocks.\(output).1")
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
}

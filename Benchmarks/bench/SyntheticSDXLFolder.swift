// A full-size SDXL base diffusers folder of synthetic fp16 weights, written once, so that
// `bench --model-type sdxl` loads SDXL as a user's fp16 download is loaded: from files, the
// weights used in place in the file mapping. The values are `WeightStore(syntheticSeed:)`'s,
// rounded to half; the key lists mirror the diffusers/transformers layouts the models read, and
// the loader checks them (a missing or mis-shaped key throws, a leftover one is reported).

import Foundation
import SDModels
import SDPipeline
import SDTensor

/// A tensor to write: its diffusers key and shape.
typealias TensorShape = (key: String, shape: [Int])

/// The tensors of a diffusers `ResnetBlock2D` under `key` (`timeEmbedding` nil in the VAE).
private func resnetTensors(_ key: String, in cin: Int, out cout: Int, timeEmbedding: Int?)
  -> [TensorShape]
{
  var tensors: [TensorShape] = [
    ("\(key).norm1.weight", [cin]), ("\(key).norm1.bias", [cin]),
    ("\(key).conv1.weight", [cout, cin, 3, 3]), ("\(key).conv1.bias", [cout]),
    ("\(key).norm2.weight", [cout]), ("\(key).norm2.bias", [cout]),
    ("\(key).conv2.weight", [cout, cout, 3, 3]), ("\(key).conv2.bias", [cout]),
  ]
  if let timeEmbedding {
    tensors += [
      ("\(key).time_emb_proj.weight", [cout, timeEmbedding]), ("\(key).time_emb_proj.bias", [cout]),
    ]
  }
  if cin != cout {
    tensors += [
      ("\(key).conv_shortcut.weight", [cout, cin, 1, 1]), ("\(key).conv_shortcut.bias", [cout]),
    ]
  }
  return tensors
}

/// A `Linear` (`[out, in]` weight) under `key`.
private func linearTensors(_ key: String, in input: Int, out output: Int, bias: Bool = true)
  -> [TensorShape]
{
  [("\(key).weight", [output, input])] + (bias ? [("\(key).bias", [output])] : [])
}

/// A 3×3 (or `kernel`) `Conv2D` with bias under `key`.
private func convTensors(_ key: String, in input: Int, out output: Int, kernel: Int = 3)
  -> [TensorShape]
{
  [("\(key).weight", [output, input, kernel, kernel]), ("\(key).bias", [output])]
}

/// A norm's scale and shift under `key`.
private func normTensors(_ key: String, _ channels: Int) -> [TensorShape] {
  [("\(key).weight", [channels]), ("\(key).bias", [channels])]
}

/// A UNet `Transformer2DModel` under `key`: group norm, proj_in, `depth` BasicTransformerBlocks,
/// proj_out (linear or 1×1 convolutions).
private func transformerTensors(
  _ key: String, channels c: Int, depth: Int, config: UNetConfiguration
) -> [TensorShape] {
  func projection(_ name: String) -> [TensorShape] {
    config.useLinearProjection
      ? linearTensors("\(key).\(name)", in: c, out: c)
      : convTensors("\(key).\(name)", in: c, out: c, kernel: 1)
  }
  var tensors = normTensors("\(key).norm", c) + projection("proj_in")
  for block in 0..<depth {
    let prefix = "\(key).transformer_blocks.\(block)"
    for (attention, context) in [("attn1", c), ("attn2", config.crossAttentionDim)] {
      tensors += [
        ("\(prefix).\(attention).to_q.weight", [c, c]),
        ("\(prefix).\(attention).to_k.weight", [c, context]),
        ("\(prefix).\(attention).to_v.weight", [c, context]),
      ]
      tensors += linearTensors("\(prefix).\(attention).to_out.0", in: c, out: c)
    }
    tensors += normTensors("\(prefix).norm1", c) + normTensors("\(prefix).norm2", c)
    tensors += normTensors("\(prefix).norm3", c)
    tensors += linearTensors("\(prefix).ff.net.0.proj", in: c, out: 8 * c)
    tensors += linearTensors("\(prefix).ff.net.2", in: 4 * c, out: c)
  }
  return tensors + projection("proj_out")
}

/// Every tensor of a diffusers `UNet2DConditionModel` of `config`, as `UNet2DConditionModel`
/// reads them.
func unetTensors(_ config: UNetConfiguration) -> [TensorShape] {
  let channels = config.blockOutChannels
  let embedding = config.timeEmbeddingChannels
  let depths = config.transformerLayersPerBlock
  var tensors =
    linearTensors("time_embedding.linear_1", in: channels[0], out: embedding)
    + linearTensors("time_embedding.linear_2", in: embedding, out: embedding)
  if let added = config.textTimeEmbedding {
    tensors += linearTensors("add_embedding.linear_1", in: added.inputWidth, out: embedding)
    tensors += linearTensors("add_embedding.linear_2", in: embedding, out: embedding)
  }
  tensors += convTensors("conv_in", in: config.inChannels, out: channels[0])
  for index in channels.indices {
    let key = "down_blocks.\(index)"
    let (input, output) = (channels[max(0, index - 1)], channels[index])
    for layer in 0..<config.layersPerBlock {
      tensors += resnetTensors(
        "\(key).resnets.\(layer)", in: layer == 0 ? input : output, out: output,
        timeEmbedding: embedding)
      if config.downBlockHasAttention[index] {
        tensors += transformerTensors(
          "\(key).attentions.\(layer)", channels: output, depth: depths[index], config: config)
      }
    }
    if index < channels.count - 1 {
      tensors += convTensors("\(key).downsamplers.0.conv", in: output, out: output)
    }
  }
  let deepest = channels[channels.count - 1]
  for layer in 0..<2 {
    tensors += resnetTensors(
      "mid_block.resnets.\(layer)", in: deepest, out: deepest, timeEmbedding: embedding)
  }
  tensors += transformerTensors(
    "mid_block.attentions.0", channels: deepest, depth: depths[depths.count - 1], config: config)
  let reversed = Array(channels.reversed())
  for index in reversed.indices {
    let key = "up_blocks.\(index)"
    let output = reversed[index]
    let previous = reversed[max(0, index - 1)]
    let lastSkip = reversed[min(index + 1, reversed.count - 1)]
    let layers = config.layersPerBlock + 1
    for layer in 0..<layers {
      let input = (layer == 0 ? previous : output) + (layer == layers - 1 ? lastSkip : output)
      tensors += resnetTensors(
        "\(key).resnets.\(layer)", in: input, out: output, timeEmbedding: embedding)
      if config.upBlockHasAttention[index] {
        tensors += transformerTensors(
          "\(key).attentions.\(layer)", channels: output,
          depth: depths[depths.count - 1 - index], config: config)
      }
    }
    if index < reversed.count - 1 {
      tensors += convTensors("\(key).upsamplers.0.conv", in: output, out: output)
    }
  }
  tensors += normTensors("conv_norm_out", channels[0])
  return tensors + convTensors("conv_out", in: channels[0], out: config.outChannels)
}

/// Every tensor of a transformers `CLIPTextModel` (`CLIPTextModelWithProjection` when
/// `projection`), with the `text_model.` prefix of the released checkpoints.
func clipTensors(_ config: CLIPTextConfiguration, projection: Bool) -> [TensorShape] {
  let width = config.hiddenSize
  var tensors: [TensorShape] = [
    ("text_model.embeddings.token_embedding.weight", [config.vocabularySize, width]),
    ("text_model.embeddings.position_embedding.weight", [config.maxPositions, width]),
  ]
  for layer in 0..<config.layerCount {
    let key = "text_model.encoder.layers.\(layer)"
    tensors += normTensors("\(key).layer_norm1", width) + normTensors("\(key).layer_norm2", width)
    for name in ["q_proj", "k_proj", "v_proj", "out_proj"] {
      tensors += linearTensors("\(key).self_attn.\(name)", in: width, out: width)
    }
    tensors += linearTensors("\(key).mlp.fc1", in: width, out: config.intermediateSize)
    tensors += linearTensors("\(key).mlp.fc2", in: config.intermediateSize, out: width)
  }
  tensors += normTensors("text_model.final_layer_norm", width)
  if projection {
    tensors += linearTensors("text_projection", in: width, out: config.projectionWidth, bias: false)
  }
  return tensors
}

/// Every tensor of a diffusers `AutoencoderKL` of `config` (encoder and decoder).
func autoencoderTensors(_ config: AutoencoderConfiguration) -> [TensorShape] {
  let channels = config.blockOutChannels
  let deepest = channels[channels.count - 1]
  let moments = 2 * config.latentChannels
  func midBlock(_ key: String) -> [TensorShape] {
    var tensors = resnetTensors("\(key).resnets.0", in: deepest, out: deepest, timeEmbedding: nil)
    tensors += resnetTensors("\(key).resnets.1", in: deepest, out: deepest, timeEmbedding: nil)
    if config.midBlockAddAttention {
      let attention = "\(key).attentions.0"
      tensors += normTensors("\(attention).group_norm", deepest)
      for name in ["to_q", "to_k", "to_v", "to_out.0"] {
        tensors += linearTensors("\(attention).\(name)", in: deepest, out: deepest)
      }
    }
    return tensors
  }
  var tensors = convTensors("encoder.conv_in", in: config.inChannels, out: channels[0])
  for index in channels.indices {
    let key = "encoder.down_blocks.\(index)"
    let (input, output) = (channels[max(0, index - 1)], channels[index])
    for layer in 0..<config.layersPerBlock {
      tensors += resnetTensors(
        "\(key).resnets.\(layer)", in: layer == 0 ? input : output, out: output,
        timeEmbedding: nil)
    }
    if index < channels.count - 1 {
      tensors += convTensors("\(key).downsamplers.0.conv", in: output, out: output)
    }
  }
  tensors += midBlock("encoder.mid_block") + normTensors("encoder.conv_norm_out", deepest)
  tensors += convTensors("encoder.conv_out", in: deepest, out: moments)
  if config.useQuantConv {
    tensors += convTensors("quant_conv", in: moments, out: moments, kernel: 1)
  }
  if config.usePostQuantConv {
    tensors += convTensors(
      "post_quant_conv", in: config.latentChannels, out: config.latentChannels, kernel: 1)
  }
  tensors += convTensors("decoder.conv_in", in: config.latentChannels, out: deepest)
  tensors += midBlock("decoder.mid_block")
  let reversed = Array(channels.reversed())
  for index in reversed.indices {
    let key = "decoder.up_blocks.\(index)"
    let (input, output) = (reversed[max(0, index - 1)], reversed[index])
    for layer in 0...config.layersPerBlock {
      tensors += resnetTensors(
        "\(key).resnets.\(layer)", in: layer == 0 ? input : output, out: output,
        timeEmbedding: nil)
    }
    if index < reversed.count - 1 {
      tensors += convTensors("\(key).upsamplers.0.conv", in: output, out: output)
    }
  }
  tensors += normTensors("decoder.conv_norm_out", channels[0])
  return tensors + convTensors("decoder.conv_out", in: channels[0], out: config.outChannels)
}

/// Writes `tensors` as an F16 safetensors file at `path`, each tensor's values made by `store`
/// and rounded to half. Streamed tensor by tensor (the UNet's file is 5 GB), into a temporary
/// file renamed over `path` at the end. `SafeTensorsWriter` writes F32 only, from memory.
func writeHalfPrecisionSafeTensors(
  _ tensors: [TensorShape], values store: WeightStore, to path: String
) throws {
  var header: [String: JSONValue] = [:]
  var offset = 0
  for (key, shape) in tensors {
    let bytes = 2 * shape.reduce(1, *)
    header[key] = .object([
      "dtype": .string("F16"), "shape": .array(shape.map { .integer($0) }),
      "data_offsets": .array([.integer(offset), .integer(offset + bytes)]),
    ])
    offset += bytes
  }
  header["__metadata__"] = .object(["format": .string("pt")])
  var headerBytes = Array(JSONValue.object(header).serialized.utf8)
  while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
  let temporary = path + ".partial"
  guard FileManager.default.createFile(atPath: temporary, contents: nil),
    let handle = FileHandle(forWritingAtPath: temporary)
  else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary]) }
  var prefix: [UInt8] = []
  withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { prefix.append(contentsOf: $0) }
  try handle.write(contentsOf: prefix + headerBytes)
  for (key, shape) in tensors {
    let values = try store.tensor(key, shape: shape).scalars
    let bits = values.map { Float16($0).bitPattern.littleEndian }
    try bits.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
  }
  try handle.close()
  if FileManager.default.fileExists(atPath: path) {
    try FileManager.default.removeItem(atPath: path)
  }
  try FileManager.default.moveItem(atPath: temporary, toPath: path)
}

/// The diffusers `config.json` of a UNet of `config` (the keys `UNetConfiguration(contentsOf:)`
/// reads, as `stabilityai/stable-diffusion-xl-base-1.0` spells them).
private func unetConfigJSON(_ config: UNetConfiguration) -> JSONValue {
  func ints(_ values: [Int]) -> JSONValue { .array(values.map { .integer($0) }) }
  var fields: [String: JSONValue] = [
    "_class_name": .string("UNet2DConditionModel"), "in_channels": .integer(config.inChannels),
    "out_channels": .integer(config.outChannels),
    "block_out_channels": ints(config.blockOutChannels),
    "layers_per_block": .integer(config.layersPerBlock),
    "down_block_types": .array(
      config.downBlockHasAttention.map { .string($0 ? "CrossAttnDownBlock2D" : "DownBlock2D") }),
    "up_block_types": .array(
      config.upBlockHasAttention.map { .string($0 ? "CrossAttnUpBlock2D" : "UpBlock2D") }),
    "cross_attention_dim": .integer(config.crossAttentionDim),
    "attention_head_dim": ints(config.headCounts),
    "use_linear_projection": .bool(config.useLinearProjection),
    "upcast_attention": .bool(config.upcastAttention),
    "norm_num_groups": .integer(config.normGroups), "norm_eps": .number(Double(config.normEps)),
    "flip_sin_to_cos": .bool(config.flipSinToCos), "freq_shift": .number(Double(config.freqShift)),
    "transformer_layers_per_block": ints(config.transformerLayersPerBlock),
    "sample_size": .integer(config.sampleSize),
  ]
  if let added = config.textTimeEmbedding {
    fields["addition_embed_type"] = .string("text_time")
    fields["addition_time_embed_dim"] = .integer(added.timeEmbeddingWidth)
    fields["projection_class_embeddings_input_dim"] = .integer(added.inputWidth)
  }
  return .object(fields)
}

/// The transformers `config.json` of a text encoder of `config`.
private func clipConfigJSON(_ config: CLIPTextConfiguration, projection: Bool) -> JSONValue {
  .object([
    "architectures": .array([
      .string(projection ? "CLIPTextModelWithProjection" : "CLIPTextModel")
    ]),
    "vocab_size": .integer(config.vocabularySize), "hidden_size": .integer(config.hiddenSize),
    "intermediate_size": .integer(config.intermediateSize),
    "num_hidden_layers": .integer(config.layerCount),
    "num_attention_heads": .integer(config.headCount),
    "max_position_embeddings": .integer(config.maxPositions),
    "hidden_act": .string(config.activation == .gelu ? "gelu" : "quick_gelu"),
    "layer_norm_eps": .number(Double(config.layerNormEps)),
    "projection_dim": .integer(config.projectionWidth),
  ])
}

/// The diffusers `config.json` of a VAE of `config`.
private func autoencoderConfigJSON(_ config: AutoencoderConfiguration) -> JSONValue {
  let blocks = config.blockOutChannels.count
  return .object([
    "_class_name": .string("AutoencoderKL"), "in_channels": .integer(config.inChannels),
    "out_channels": .integer(config.outChannels),
    "latent_channels": .integer(config.latentChannels),
    "block_out_channels": .array(config.blockOutChannels.map { .integer($0) }),
    "layers_per_block": .integer(config.layersPerBlock),
    "norm_num_groups": .integer(config.normGroups),
    "scaling_factor": .number(Double(config.scalingFactor)),
    "down_block_types": .array(Array(repeating: .string("DownEncoderBlock2D"), count: blocks)),
    "up_block_types": .array(Array(repeating: .string("UpDecoderBlock2D"), count: blocks)),
    "sample_size": .integer(1024),
  ])
}

/// SDXL base's `scheduler/scheduler_config.json` (EulerDiscreteScheduler).
private let sdxlSchedulerConfig = """
  {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
   "beta_start": 0.00085, "clip_sample": false, "interpolation_type": "linear",
   "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
   "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
   "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false}
  """

/// CLIP's `merges.txt`: the copy bundled with SDModels beside this executable, or the package's
/// source (when run from the repository).
private func clipMergesFile() throws -> URL {
  let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
  let directory = executable.deletingLastPathComponent()
  let bundles =
    (try? FileManager.default.contentsOfDirectory(atPath: directory.path))?.filter {
      $0.hasSuffix("_SDModels.resources")
    } ?? []
  let candidates =
    bundles.map { directory.appendingPathComponent("\($0)/Resources/clip-merges.txt") }
    + [URL(fileURLWithPath: "Sources/SDModels/Resources/clip-merges.txt")]
  guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) })
  else { throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "clip-merges.txt"]) }
  return found
}

/// Writes a `tokenizer/` folder of CLIP's vocabulary (the bundled one) padding with `padToken`.
private func writeTokenizer(at folder: URL, padToken: String) throws {
  try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  let tokenizer = try CLIPTokenizer.bundled()
  let tokens = tokenizer.convertIDsToTokens(Array(0...tokenizer.eosID))
  let vocabulary = JSONValue.object(
    Dictionary(uniqueKeysWithValues: tokens.enumerated().map { ($1, .integer($0)) }))
  try Data(vocabulary.serialized.utf8).write(to: folder.appendingPathComponent("vocab.json"))
  try FileManager.default.copyItem(
    at: try clipMergesFile(), to: folder.appendingPathComponent("merges.txt"))
  let special = JSONValue.object([
    "bos_token": .string("<|startoftext|>"), "eos_token": .string("<|endoftext|>"),
    "unk_token": .string("<|endoftext|>"), "pad_token": .string(padToken),
  ])
  try Data(special.serialized.utf8).write(
    to: folder.appendingPathComponent("special_tokens_map.json"))
}

/// Writes a full-size SDXL base diffusers folder at `folder` with synthetic fp16 weights
/// (`*.fp16.safetensors`, ~6.9 GB) unless a complete one is already there; returns whether it
/// wrote one. `model_index.json` is written last, so an interrupted write is redone.
@discardableResult
func writeSyntheticSDXLFolder(at folder: URL) throws -> Bool {
  let index = folder.appendingPathComponent("model_index.json")
  if FileManager.default.fileExists(atPath: index.path) { return false }
  let store = WeightStore(syntheticSeed: 1)
  let parts: [(String, String, JSONValue, [TensorShape])] = [
    (
      "text_encoder", "model", clipConfigJSON(.stableDiffusionXL, projection: false),
      clipTensors(.stableDiffusionXL, projection: false)
    ),
    (
      "text_encoder_2", "model", clipConfigJSON(.stableDiffusionXLTextEncoder2, projection: true),
      clipTensors(.stableDiffusionXLTextEncoder2, projection: true)
    ),
    (
      "unet", "diffusion_pytorch_model", unetConfigJSON(.stableDiffusionXL),
      unetTensors(.stableDiffusionXL)
    ),
    (
      "vae", "diffusion_pytorch_model", autoencoderConfigJSON(.stableDiffusionXL),
      autoencoderTensors(.stableDiffusionXL)
    ),
  ]
  for (part, stem, config, tensors) in parts {
    let directory = folder.appendingPathComponent(part)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try Data(config.serialized.utf8).write(to: directory.appendingPathComponent("config.json"))
    let start = DispatchTime.now().uptimeNanoseconds
    let path = directory.appendingPathComponent("\(stem).fp16.safetensors").path
    try writeHalfPrecisionSafeTensors(tensors, values: store, to: path)
    let parameters = tensors.reduce(0) { $0 + $1.shape.reduce(1, *) }
    printError(
      String(
        format: "bench: wrote %@ (%.0f M parameters, %.2f GB) in %.1f s", path,
        Double(parameters) / 1e6, 2 * Double(parameters) / 1e9,
        Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
  }
  for (name, pad) in [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")] {
    let tokenizer = folder.appendingPathComponent(name)
    if FileManager.default.fileExists(atPath: tokenizer.path) {
      try FileManager.default.removeItem(at: tokenizer)
    }
    try writeTokenizer(at: tokenizer, padToken: pad)
  }
  let scheduler = folder.appendingPathComponent("scheduler")
  try FileManager.default.createDirectory(at: scheduler, withIntermediateDirectories: true)
  try Data(sdxlSchedulerConfig.utf8).write(
    to: scheduler.appendingPathComponent("scheduler_config.json"))
  let modelIndex = JSONValue.object([
    "_class_name": .string("StableDiffusionXLPipeline"),
    "force_zeros_for_empty_prompt": .bool(true),
  ])
  try Data(modelIndex.serialized.utf8).write(to: index)
  return true
}

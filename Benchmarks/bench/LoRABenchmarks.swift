// The cost of a LoRA on the full-size UNet: a synthetic rank-32 adapter over every attention
// projection (to_q, to_k, to_v, to_out.0 of attn1 and attn2), merged into the weights as the
// library does, against the alternative of an extra low-rank product in every call.

import Foundation
import SDModels
import SDTensor

/// The attention projections of a UNet of `config` as (diffusers layer, in, out).
func attentionProjections(_ config: UNetConfiguration) -> [(String, Int, Int)] {
  var layers: [(String, Int, Int)] = []
  func transformer(_ key: String, _ channels: Int, depth: Int) {
    for block in 0..<depth {
      let prefix = "\(key).transformer_blocks.\(block)"
      for name in ["to_q", "to_k", "to_v", "to_out.0"] {
        layers.append(("\(prefix).attn1.\(name)", channels, channels))
        let input = name == "to_k" || name == "to_v" ? config.crossAttentionDim : channels
        layers.append(("\(prefix).attn2.\(name)", input, channels))
      }
    }
  }
  let channels = config.blockOutChannels
  for (index, attention) in config.downBlockHasAttention.enumerated() where attention {
    for layer in 0..<config.layersPerBlock {
      transformer(
        "down_blocks.\(index).attentions.\(layer)", channels[index],
        depth: config.transformerLayersPerBlock[index])
    }
  }
  let depths = config.transformerLayersPerBlock
  transformer(
    "mid_block.attentions.0", channels[channels.count - 1], depth: depths[depths.count - 1])
  let reversed = Array(channels.reversed())
  for (index, attention) in config.upBlockHasAttention.enumerated() where attention {
    for layer in 0...config.layersPerBlock {
      transformer(
        "up_blocks.\(index).attentions.\(layer)", reversed[index],
        depth: depths[depths.count - 1 - index])
    }
  }
  return layers
}

/// Merges a synthetic rank-32 LoRA into the UNet of `store`, times the merge and one 64×64 CFG
/// step with the merged weights, and times what the per-call alternative would add per step.
func runLoRABenchmarks(
  store: WeightStore, unet: UNet2DConditionModel, context: Tensor, options: ComputeOptions,
  report: inout BenchReport
) throws {
  let rank = 32
  let config = unet.configuration
  let projections = attentionProjections(config)
  let updates = projections.map { layer, input, output in
    LoRA.Update(
      part: .unet, layer: layer, naming: .dotted, key: layer, down: benchTensor([rank, input]),
      up: benchTensor([output, rank]), alpha: Float(rank))
  }
  let lora = LoRA(name: "synthetic-rank32", updates: updates)
  let start = DispatchTime.now().uptimeNanoseconds
  let merge = try LoRAMerge([ScaledLoRA(lora, scale: 0.8)], part: .unet, into: store, unet: config)
  report.add(
    "LoRA rank 32, \(merge.mergedLayers) attention layers: merge",
    seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
  // What the merge keeps: a copy of each touched layer, in the precision weights are kept in.
  let layerBytes = projections.reduce(0) { $0 + $1.1 * $1.2 } * (store.keepsHalfPrecision ? 2 : 4)
  report.extra["LoRA merged layer copies GB"] = Double(layerBytes) / 1e9
  report.extra["LoRA per call: adapter tensors GB"] =
    Double(projections.reduce(0) { $0 + rank * ($1.1 + $1.2) } * 4) / 1e9
  // The rebuilt UNet reads the merged layers and, from real files, everything else in place;
  // synthetic weights are generated again here, so only the step after it is timed.
  let merged = try UNet2DConditionModel(configuration: config, weights: merge.weights)
  let sample = guidedSample(side: 64)
  report.add(
    "LoRA merged: UNet batch 2 latent 64x64",
    seconds: timeMedian(runs: 2) {
      _ = merged(sample, timesteps: [999, 999], context: context, options: options)
    })

  // Per call instead: every projection also computes (x·downᵀ)·upᵀ. Timed on the 64×64 level's
  // to_q (2 × 4096 tokens, 320 → 320), and the extra FLOPs of all projections per step.
  let channels = config.blockOutChannels[0]
  let tokens = benchTensor([2 * 64 * 64, channels])
  let weight = benchTensor([channels, channels])
  let (down, up) = (benchTensor([rank, channels]), benchTensor([channels, rank]))
  let plain = timeMedian(runs: 5) {
    _ = linear(tokens, weight: weight, bias: nil, options: options)
  }
  let lowRank = timeMedian(runs: 5) {
    var out = linear(tokens, weight: weight, bias: nil, options: options)
    out.add(
      linear(
        linear(tokens, weight: down, bias: nil, options: options), weight: up, bias: nil,
        options: options))
  }
  report.add("LoRA per call: to_q 8192x320, plain", seconds: plain)
  report.add("LoRA per call: to_q 8192x320 + rank-32 product", seconds: lowRank)
  var extra = 0.0
  let levels = config.blockOutChannels.count
  for (layer, input, output) in projections {
    // Tokens by level: 64×64 at the first, each level down halves the side.
    let parts = layer.split(separator: ".")
    let block = Int(parts[1]) ?? 0
    let level =
      parts[0] == "down_blocks" ? block : parts[0] == "up_blocks" ? levels - 1 - block : levels - 1
    let side = 64 >> level
    let queries = 2 * side * side
    let isContext = layer.contains("attn2.to_k") || layer.contains("attn2.to_v")
    extra += 2.0 * Double((isContext ? 2 * 77 : queries) * rank * (input + output))
  }
  report.extra["LoRA per call: extra GFLOP per 64x64 CFG step"] = extra / 1e9
}

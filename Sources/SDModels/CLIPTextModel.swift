// The CLIP text encoder, mirroring transformers' `CLIPTextModel` (models/clip/modeling_clip.py),
// the `text_encoder/` folder of a diffusers checkpoint: token + position embeddings, pre-LN
// transformer layers with a causal mask, final layer norm.

import Foundation
import SDTensor

/// One pre-LN encoder layer (`CLIPEncoderLayer`): x + attn(ln1(x)), then x + mlp(ln2(x)).
public struct CLIPEncoderLayer: Sendable {
  /// `layer_norm1`: before self-attention.
  public let layerNorm1: LayerNorm
  /// `self_attn.q_proj`: hidden -> hidden.
  public let qProj: Linear
  /// `self_attn.k_proj`: hidden -> hidden.
  public let kProj: Linear
  /// `self_attn.v_proj`: hidden -> hidden.
  public let vProj: Linear
  /// `self_attn.out_proj`: hidden -> hidden, added to the input.
  public let outProj: Linear
  /// `layer_norm2`: before the MLP.
  public let layerNorm2: LayerNorm
  /// `mlp.fc1`: hidden -> intermediateSize, then `activation`.
  public let fc1: Linear
  /// `mlp.fc2`: intermediateSize -> hidden, added to the residual.
  public let fc2: Linear
  /// Attention heads (`num_attention_heads`); attention is causal.
  public let heads: Int
  /// The MLP's activation (`hidden_act`: quick-GELU for SD 1.x, GELU for SD 2.x).
  public let activation: Activation

  init(_ store: WeightStore, _ key: String, _ config: CLIPTextConfiguration) throws(WeightError) {
    let width = config.hiddenSize
    layerNorm1 = try LayerNorm(
      store, "\(key).layer_norm1", channels: width, eps: config.layerNormEps)
    qProj = try Linear(store, "\(key).self_attn.q_proj", in: width, out: width)
    kProj = try Linear(store, "\(key).self_attn.k_proj", in: width, out: width)
    vProj = try Linear(store, "\(key).self_attn.v_proj", in: width, out: width)
    outProj = try Linear(store, "\(key).self_attn.out_proj", in: width, out: width)
    layerNorm2 = try LayerNorm(
      store, "\(key).layer_norm2", channels: width, eps: config.layerNormEps)
    fc1 = try Linear(store, "\(key).mlp.fc1", in: width, out: config.intermediateSize)
    fc2 = try Linear(store, "\(key).mlp.fc2", in: config.intermediateSize, out: width)
    heads = config.headCount
    activation = config.activation
  }

  /// `[b, t, hidden]` -> `[b, t, hidden]`.
  public func callAsFunction(_ x: Tensor, options: ComputeOptions) -> Tensor {
    let normed = layerNorm1(x, options: options)
    let attended = scaledDotProductAttention(
      query: qProj(normed, options: options), key: kProj(normed, options: options),
      value: vProj(normed, options: options), heads: heads, causal: true,
      options: options)
    var hidden = x
    hidden.add(outProj(attended, options: options))
    let expanded = activate(
      fc1(layerNorm2(hidden, options: options), options: options), activation, options: options)
    hidden.add(fc2(expanded, options: options))
    return hidden
  }
}

/// The CLIP text transformer: token ids `[b, t]` -> hidden states `[b, t, hidden]`.
public struct CLIPTextModel: Sendable {
  /// The architecture it was built with (`text_encoder/config.json`).
  public let configuration: CLIPTextConfiguration
  /// `[vocabulary, hidden]`; a layer weight (half precision when the store keeps it) since only
  /// the rows of a prompt's tokens are read: 152 MB in Float32 for SD's 49 408 tokens.
  public let tokenEmbedding: Weight
  /// `embeddings.position_embedding.weight`: `[maxPositions, hidden]`, one row per position.
  public let positionEmbedding: Tensor
  /// `encoder.layers.<i>`: `layerCount` of them.
  public let layers: [CLIPEncoderLayer]
  /// `final_layer_norm`: applied to the last layer's output (also after a clip skip).
  public let finalLayerNorm: LayerNorm
  /// `text_projection` (no bias), in a `CLIPTextModelWithProjection` (SDXL's second encoder):
  /// the final-normed state at the EOS token -> the pooled `text_embeds`; nil otherwise.
  public let textProjection: Linear?

  /// Builds the model from `store`. Released SD checkpoints prefix every key with `text_model.`;
  /// text encoders saved by transformers 5 drop it. Both are accepted.
  /// - Throws: `WeightError` naming a missing or mis-shaped key.
  public init(configuration config: CLIPTextConfiguration, weights store: WeightStore)
    throws(WeightError)
  {
    let prefix =
      store.contains("text_model.embeddings.token_embedding.weight") ? "text_model." : ""
    configuration = config
    tokenEmbedding = try store.weight(
      "\(prefix)embeddings.token_embedding.weight",
      shape: [config.vocabularySize, config.hiddenSize])
    positionEmbedding = try store.tensor(
      "\(prefix)embeddings.position_embedding.weight",
      shape: [config.maxPositions, config.hiddenSize])
    var layers: [CLIPEncoderLayer] = []
    for index in 0..<config.layerCount {
      layers.append(try CLIPEncoderLayer(store, "\(prefix)encoder.layers.\(index)", config))
    }
    self.layers = layers
    finalLayerNorm = try LayerNorm(
      store, "\(prefix)final_layer_norm", channels: config.hiddenSize, eps: config.layerNormEps)
    textProjection =
      store.contains("text_projection.weight")
      ? try Linear(
        store, "text_projection", in: config.hiddenSize, out: config.projectionWidth, bias: false)
      : nil
  }

  /// The token embedding rows of `ids` (no positions) -> `[1, ids.count, hidden]`, the input of
  /// `encode(tokenEmbeddings:...)` where no vector replaces a token.
  public func tokenEmbeddings(_ ids: [Int]) -> Tensor {
    let width = configuration.hiddenSize
    var rows = [Float](repeating: 0, count: ids.count * width)
    for (position, id) in ids.enumerated() {
      precondition(id >= 0 && id < configuration.vocabularySize, "token id \(id) out of range")
      rows.replaceSubrange(
        position * width..<(position + 1) * width,
        with: tokenEmbedding.scalars(id * width..<(id + 1) * width))
    }
    return Tensor(shape: [1, ids.count, width], scalars: rows)
  }

  /// The token and position embeddings of `ids` (`[b][t]`, t ≤ maxPositions) -> `[b, t, hidden]`.
  public func embed(_ ids: [[Int]]) -> Tensor {
    let width = configuration.hiddenSize
    let length = ids.first?.count ?? 0
    precondition(
      length <= configuration.maxPositions,
      "\(length) tokens, at most \(configuration.maxPositions)")
    var out = [Float](repeating: 0, count: ids.count * length * width)
    for (row, sequence) in ids.enumerated() {
      precondition(sequence.count == length, "token rows of different lengths")
      for (position, id) in sequence.enumerated() {
        precondition(id >= 0 && id < configuration.vocabularySize, "token id \(id) out of range")
        let base = (row * length + position) * width
        let token = tokenEmbedding.scalars(id * width..<(id + 1) * width)
        for c in 0..<width {
          out[base + c] = token[c] + positionEmbedding.scalars[position * width + c]
        }
      }
    }
    return Tensor(shape: [ids.count, length, width], scalars: out)
  }

  /// Hidden states after the embeddings (index 0) and after each layer (index i), without the
  /// final layer norm: transformers' `output_hidden_states`.
  public func hiddenStates(_ ids: [[Int]], options: ComputeOptions) -> [Tensor] {
    var states = [embed(ids)]
    for layer in layers {
      states.append(layer(states[states.count - 1], options: options))
    }
    return states
  }

  /// Encodes token ids `[b][t]` -> `[b, t, hidden]`: the last hidden state after the final
  /// layer norm, or with `skipLastLayers` = k > 0 the output of layer count − k, also
  /// final-normed (diffusers' `clip_skip`).
  public func callAsFunction(_ ids: [[Int]], skipLastLayers: Int = 0, options: ComputeOptions)
    -> Tensor
  {
    encode(embed(ids), skipLastLayers: skipLastLayers, options: options)
  }

  /// Encodes token embeddings `[b, t, hidden]` (rows of `tokenEmbedding`, or vectors put in
  /// their place such as textual-inversion embeddings) as `callAsFunction(_:)` encodes ids:
  /// position embeddings are added here.
  public func callAsFunction(
    tokenEmbeddings: Tensor, skipLastLayers: Int = 0, options: ComputeOptions
  ) -> Tensor {
    encode(positioned(tokenEmbeddings), skipLastLayers: skipLastLayers, options: options)
  }

  /// Token embeddings `[b, t, hidden]` plus the position embeddings of the first t positions.
  private func positioned(_ tokenEmbeddings: Tensor) -> Tensor {
    let (length, width) = (tokenEmbeddings.shape[1], tokenEmbeddings.shape[2])
    precondition(
      length <= configuration.maxPositions && width == configuration.hiddenSize,
      "token embeddings \(tokenEmbeddings.shape)")
    let positions = Tensor(
      shape: [1, length, width], scalars: Array(positionEmbedding.scalars.prefix(length * width)))
    return tokenEmbeddings + positions
  }

  /// What a pipeline takes from the encoder for a prompt.
  public enum Output: Sendable {
    /// SD 1.x/2.x: the output of layer count − k after the final layer norm (diffusers'
    /// `clip_skip` k).
    case finalNormed
    /// SDXL: `hidden_states[-(k + 2)]`, the penultimate layer's output for k = 0, without the
    /// final layer norm.
    case penultimate
  }

  /// Encodes token embeddings `[1, t, hidden]` (rows of `tokenEmbedding` or vectors in their
  /// place) as a pipeline of `output` takes them, skipping the last `skipLastLayers`, and with
  /// a `textProjection` the pooled `text_embeds` `[1, projection]`: the final-normed last
  /// state at `eosPosition` (the first EOS, as transformers picks it), projected.
  public func encode(
    tokenEmbeddings: Tensor, output: Output, skipLastLayers: Int, eosPosition: Int,
    options: ComputeOptions
  ) -> (states: Tensor, pooled: Tensor?) {
    let width = configuration.hiddenSize
    precondition(
      tokenEmbeddings.shape[0] == 1 && eosPosition < tokenEmbeddings.shape[1],
      "token embeddings \(tokenEmbeddings.shape), EOS at \(eosPosition)")
    let kept = layers.count - skipLastLayers - (output == .penultimate ? 1 : 0)
    precondition(kept >= 1 && skipLastLayers >= 0, "clip skip \(skipLastLayers)")
    var hidden = positioned(tokenEmbeddings)
    var states: Tensor?
    for (index, layer) in layers.enumerated() {
      hidden = layer(hidden, options: options)
      if index + 1 == kept {
        states = output == .penultimate ? hidden : finalLayerNorm(hidden, options: options)
        if textProjection == nil { break }
      }
    }
    guard let states else { preconditionFailure("no layer kept") }
    guard let textProjection else { return (states, nil) }
    let last = finalLayerNorm(hidden, options: options)
    let eos = Tensor(
      shape: [1, width],
      scalars: Array(last.scalars[eosPosition * width..<(eosPosition + 1) * width]))
    return (states, textProjection(eos, options: options))
  }

  private func encode(_ embedded: Tensor, skipLastLayers: Int, options: ComputeOptions) -> Tensor {
    precondition(
      skipLastLayers >= 0 && skipLastLayers < layers.count, "clip skip \(skipLastLayers)")
    var hidden = embedded
    for layer in layers.prefix(layers.count - skipLastLayers) {
      hidden = layer(hidden, options: options)
    }
    return finalLayerNorm(hidden, options: options)
  }
}

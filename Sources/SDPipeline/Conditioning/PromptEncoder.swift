// Prompt text → text-encoder output, the way people write prompts: attention weights
// (PromptWeighting.swift), textual-inversion words, and prompts longer than the encoder's 75
// tokens, which are encoded in chunks of 75 and concatenated along the sequence (the web UIs'
// behaviour) instead of being cut.

import SDModels
import SDTensor

/// Encodes prompts with weights, embeddings and chunking for one text encoder.
public struct PromptEncoder: Sendable {
  /// Turns text into token ids.
  public let tokenizer: CLIPTokenizer
  /// Turns token ids into hidden states.
  public let textEncoder: CLIPTextModel
  /// Textual inversions whose names stand for their vectors.
  public let embeddings: [TextualInversion]
  /// Which hidden state stands for the prompt: the final-normed last one (SD 1.x/2.x) or the
  /// penultimate one (SDXL).
  public var output: CLIPTextModel.Output = .finalNormed

  /// Tokens per chunk between BOS and EOS.
  public static let chunkLength = CLIPTokenizer.maxLength - 2

  /// An encoder without textual-inversion embeddings.
  public init(tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel) {
    self.tokenizer = tokenizer
    self.textEncoder = textEncoder
    embeddings = []
  }

  /// An encoder that replaces the names of `embeddings` in prompts by their vectors.
  /// - Throws: `PipelineError.invalidArgument` when an embedding's width is not the encoder's.
  public init(
    tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, embeddings: [TextualInversion]
  ) throws(PipelineError) {
    for embedding in embeddings
    where embedding.vectors.shape[1] != textEncoder.configuration.hiddenSize {
      throw .invalidArgument(
        name: "embedding",
        reason:
          "'\(embedding.name)' has width \(embedding.vectors.shape[1]), this text encoder \(textEncoder.configuration.hiddenSize)"
      )
    }
    self.tokenizer = tokenizer
    self.textEncoder = textEncoder
    self.embeddings = embeddings
  }

  /// One position of the token stream: a vocabulary id or a learned vector, with its weight.
  struct Token {
    var id: Int
    var vector: ArraySlice<Float>?
    var weight: Float
    var label: String
  }

  /// The encoded prompt and what was left out.
  public struct Encoding: Sendable {
    /// `[1, 77 · chunks, hidden]`.
    public var embeddings: Tensor
    /// Tokens cut by `truncate` (empty otherwise).
    public var cutTokens: [String]
    /// The pooled `text_embeds` `[1, projection]` of the first chunk, from an encoder with a
    /// `textProjection` (SDXL's second one); nil otherwise.
    public var pooled: Tensor? = nil
    /// How many 77-token chunks the prompt was encoded in.
    public var chunks: Int { embeddings.shape[1] / CLIPTokenizer.maxLength }
  }

  /// Encodes `text`. Without weights, embeddings and beyond-75 tokens this is exactly
  /// diffusers' `encode_prompt` (BOS, ids, EOS, padding; one pass of the encoder).
  /// - Parameters:
  ///   - text: the prompt.
  ///   - truncate: keep only the first 75 tokens (reported in `cutTokens`) instead of chunking.
  ///   - parsesWeights: read `(word:1.3)`-style weights; false takes brackets literally.
  ///   - clipSkip: skip the text encoder's last k layers (diffusers' `clip_skip`).
  ///   - options: threads and cancellation.
  public func encode(
    _ text: String, truncate: Bool = false, parsesWeights: Bool = true, clipSkip: Int = 0,
    options: ComputeOptions
  ) -> Encoding {
    var tokens = tokenStream(
      parsesWeights ? WeightedPrompt(parsing: text) : WeightedPrompt(plain: text))
    var cut: [String] = []
    if truncate, tokens.count > Self.chunkLength {
      cut = tokens[Self.chunkLength...].map(\.label)
      tokens = Array(tokens.prefix(Self.chunkLength))
    }
    var chunks: [Tensor] = []
    var pooled: Tensor?
    var start = 0
    repeat {
      let chunk = Array(tokens[start..<min(start + Self.chunkLength, tokens.count)])
      let encoded = encodeChunk(chunk, clipSkip: clipSkip, options: options)
      chunks.append(encoded.states)
      // As the web UIs do for SDXL, the first chunk's pooled embedding stands for the prompt.
      if start == 0 { pooled = encoded.pooled }
      start += Self.chunkLength
    } while start < tokens.count
    return Encoding(
      embeddings: chunks.count == 1 ? chunks[0] : concatenate(chunks, axis: 1), cutTokens: cut,
      pooled: pooled)
  }

  /// The encoding of one empty chunk, used to bring a shorter prompt to a longer one's length.
  public func emptyChunk(clipSkip: Int = 0, options: ComputeOptions) -> Tensor {
    encodeChunk([], clipSkip: clipSkip, options: options).states
  }

  /// The encoding of the empty prompt "", with its pooled embedding.
  public func emptyPrompt(clipSkip: Int = 0, options: ComputeOptions) -> Encoding {
    let encoded = encodeChunk([], clipSkip: clipSkip, options: options)
    return Encoding(embeddings: encoded.states, cutTokens: [], pooled: encoded.pooled)
  }

  /// Token ids and embedding vectors of each fragment, in order, with the fragment's weight.
  func tokenStream(_ prompt: WeightedPrompt) -> [Token] {
    var tokens: [Token] = []
    for (text, weight) in prompt.fragments {
      for piece in splitEmbeddingNames(text) {
        switch piece {
        case .text(let text):
          let ids = tokenizer.encode(text, addSpecialTokens: false)
          for (id, label) in zip(ids, tokenizer.convertIDsToTokens(ids)) {
            tokens.append(Token(id: id, vector: nil, weight: weight, label: label))
          }
        case .embedding(let embedding):
          let width = embedding.vectors.shape[1]
          for row in 0..<embedding.vectors.shape[0] {
            tokens.append(
              Token(
                id: tokenizer.unknownID,
                vector: embedding.vectors.scalars[row * width..<(row + 1) * width],
                weight: weight, label: embedding.name))
          }
        }
      }
    }
    return tokens
  }

  private enum Piece {
    case text(String)
    case embedding(TextualInversion)
  }

  /// Cuts `text` at whole-word, case-insensitive occurrences of embedding names.
  private func splitEmbeddingNames(_ text: String) -> [Piece] {
    guard !embeddings.isEmpty else { return [.text(text)] }
    let characters = Array(text)
    let lowered = characters.map { Character($0.lowercased()) }
    func isWordCharacter(_ c: Character) -> Bool {
      c.isLetter || c.isNumber || c == "_" || c == "-"
    }
    var pieces: [Piece] = []
    var plain = ""
    var i = 0
    scan: while i < characters.count {
      if i == 0 || !isWordCharacter(characters[i - 1]) {
        for embedding in embeddings {
          let name = Array(embedding.name.lowercased())
          let end = i + name.count
          guard !name.isEmpty, end <= characters.count, Array(lowered[i..<end]) == name,
            end == characters.count || !isWordCharacter(characters[end])
          else { continue }
          if !plain.isEmpty { pieces.append(.text(plain)) }
          plain = ""
          pieces.append(.embedding(embedding))
          i = end
          continue scan
        }
      }
      plain.append(characters[i])
      i += 1
    }
    if !plain.isEmpty { pieces.append(.text(plain)) }
    return pieces
  }

  /// BOS + tokens + EOS + padding through the encoder; then the web UIs' weighting: each
  /// position's output times its weight, rescaled so the chunk's mean is unchanged. (That rule
  /// divides by the weighted mean, so it is ill-conditioned when a chunk's mean is near 0; we
  /// follow it as published, in double precision.)
  func encodeChunk(_ tokens: [Token], clipSkip: Int, options: ComputeOptions) -> (
    states: Tensor, pooled: Tensor?
  ) {
    let length = CLIPTokenizer.maxLength
    let ids =
      [tokenizer.bosID] + tokens.map(\.id) + [tokenizer.eosID]
      + Array(repeating: tokenizer.padID, count: length - 2 - tokens.count)
    let weights: [Float] =
      [1] + tokens.map(\.weight) + Array(repeating: 1, count: length - 1 - tokens.count)
    let width = textEncoder.configuration.hiddenSize
    var rows = textEncoder.tokenEmbeddings(ids)
    // Textual-inversion vectors take the place of their placeholder tokens.
    for (index, token) in tokens.enumerated() {
      if let vector = token.vector {
        let position = index + 1
        rows.scalars.replaceSubrange(position * width..<(position + 1) * width, with: vector)
      }
    }
    let (encoded, pooled) = textEncoder.encode(
      tokenEmbeddings: rows, output: output,
      skipLastLayers: clipSkip, eosPosition: tokens.count + 1, options: options)
    guard weights.contains(where: { $0 != 1 }) else { return (encoded, pooled) }
    let originalMean = mean(encoded.scalars)
    var weightedSum = 0.0
    for position in 0..<length {
      for c in 0..<width {
        weightedSum += Double(encoded.scalars[position * width + c]) * Double(weights[position])
      }
    }
    let ratio = originalMean / (weightedSum / Double(encoded.count))
    var scaled = encoded.scalars
    for position in 0..<length {
      for c in 0..<width {
        scaled[position * width + c] = Float(
          Double(scaled[position * width + c]) * Double(weights[position]) * ratio)
      }
    }
    return (Tensor(shape: encoded.shape, scalars: scaled), pooled)
  }

  private func mean(_ values: [Float]) -> Double {
    values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
  }
}

extension WeightedPrompt {
  /// The whole text as one fragment of weight 1 (brackets taken literally).
  public init(plain text: String) {
    self.init(parsing: "")
    fragments = text.isEmpty ? [] : [(text, Float(1))]
  }
}

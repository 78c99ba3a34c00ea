// Text-encoder states kept across generations that share prompts: a grid that varies the seed,
// the scale or a negative's weight encodes each distinct prompt once, and so does a batch whose
// jobs repeat a prompt.

import Synchronization
import SDTensor

/// Encodings by everything that determines them: the text, the encoding settings and the
/// textual-inversion vectors. Valid for one text encoder: a pipeline with LoRAs applied (they may
/// change the text encoder) needs a cache of its own. Thread-safe.
public final class PromptEncodingCache: Sendable {
  struct Key: Hashable {
    /// The text, or nil for the empty chunk that pads rows to one length.
    let text: String?
    /// SDXL: the second encoder's own text, when it has one.
    let secondText: String?
    let truncate: Bool
    let parsesWeights: Bool
    let clipSkip: Int
    let embeddings: [EmbeddingKey]
  }

  struct EmbeddingKey: Hashable {
    let name: String
    let shape: [Int]
    let scalars: [Float]
  }

  private let entries = Mutex<[Key: PromptEncoder.Encoding]>([:])
  /// Entries kept at most; past it the cache starts afresh (a batch of distinct prompts would
  /// otherwise keep every encoding: ~0.2 MB each for SD 1.5, more with long prompts).
  public let capacity: Int

  /// An empty cache of at most `capacity` encodings.
  public init(capacity: Int = 256) { self.capacity = Swift.max(1, capacity) }

  /// Encodings held now.
  public var count: Int { entries.withLock { $0.count } }

  /// The cached encoding for `key`, or `encode()`'s result, kept.
  func encoding(_ key: Key, encode: () -> PromptEncoder.Encoding) -> PromptEncoder.Encoding {
    if let known = entries.withLock({ $0[key] }) { return known }
    let encoding = encode()
    entries.withLock { entries in
      if entries.count >= capacity { entries.removeAll() }
      entries[key] = encoding
    }
    return encoding
  }

  /// The key of `text` (nil: the empty chunk) under `request`'s encoding settings and
  /// embeddings.
  static func key(_ text: String?, second: String? = nil, _ request: GenerationRequest) -> Key {
    Key(
      text: text, secondText: second, truncate: request.truncatePrompts,
      parsesWeights: request.parsesPromptWeights,
      clipSkip: request.clipSkip,
      embeddings: request.embeddings.map {
        EmbeddingKey(name: $0.name, shape: $0.vectors.shape, scalars: $0.vectors.scalars)
      })
  }
}

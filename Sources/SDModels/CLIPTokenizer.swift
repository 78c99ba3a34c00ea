// CLIP's byte-level BPE tokenizer, giving the ids of `transformers.CLIPTokenizer` (5.x, the class
// diffusers loads), whose rules are, in order:
//   1. added tokens (BOS, EOS, UNK, PAD and any `added_tokens_decoder` entry) are cut out of the
//      raw text first, case-sensitively, leftmost-longest; SD 2.x's pad token "!" is one of them,
//      so there every "!" becomes id 0;
//   2. each remaining segment: Unicode NFC, every whitespace run becomes one space, lower-case
//      per scalar (full mappings: "İ" becomes "i̇");
//   3. split into the matches of
//      `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//      (whitespace between matches is dropped);
//   4. each piece's UTF-8 bytes mapped to GPT-2's printable byte alphabet, "</w>" appended to
//      its last symbol, and the merges applied lowest rank first;
//   5. BOS + ids truncated to 75 + EOS, padded to 77 with the pad token.
// The older slow tokenizer also ran ftfy's text fixing; transformers 5 no longer does, so neither
// do we.

import Foundation
import SDTensor

/// CLIP's BPE tokenizer, loaded from a diffusers `tokenizer/` folder or the bundled vocabulary.
public struct CLIPTokenizer: Sendable {
  /// The text encoder's context: BOS + 75 tokens + EOS.
  public static let maxLength = 77

  /// Token string → id.
  let vocabulary: [String: Int]
  /// Id → token string.
  let tokens: [String]
  /// (left id << 32 | right id) → (rank, merged id).
  let merges: [UInt64: (rank: Int, merged: Int)]
  /// Tokens cut out of the raw text before BPE, longest first.
  let addedTokens: [(text: [Unicode.Scalar], id: Int)]
  /// Id of the begin-of-text token `bos_token` ("<|startoftext|>", 49406 in SD's vocabulary).
  public let bosID: Int
  /// Id of the end-of-text token `eos_token` ("<|endoftext|>", 49407).
  public let eosID: Int
  /// Id that fills `inputIDs` to 77 (`pad_token`: "<|endoftext|>" in SD 1.x, "!" = 0 in SD 2.x).
  public let padID: Int
  /// Id given to a byte symbol missing from the vocabulary (`unk_token`, "<|endoftext|>").
  public let unknownID: Int

  // MARK: Loading

  /// Loads `vocab.json`, `merges.txt` and `tokenizer_config.json` (or `special_tokens_map.json`)
  /// from a diffusers `tokenizer/` folder.
  /// - Throws: `ModelError.invalidTokenizer` naming the file that is missing or malformed.
  public init(directory: URL) throws(ModelError) {
    let vocabularyFile = directory.appendingPathComponent("vocab.json")
    let vocabularyJSON = try Self.readJSON(vocabularyFile)
    guard let entries = vocabularyJSON.objectValue, !entries.isEmpty else {
      throw .invalidTokenizer(
        file: vocabularyFile.path, reason: "expected a non-empty object of token → id")
    }
    var vocabulary: [String: Int] = [:]
    for (token, value) in entries {
      guard let id = value.intValue else {
        throw .invalidTokenizer(
          file: vocabularyFile.path,
          reason: "id of '\(token)' is \(value.serialized), not an integer")
      }
      // Ids index the token-embedding table; CLIP's has 49 408 rows.
      guard (0..<(1 << 24)).contains(id) else {
        throw .invalidTokenizer(
          file: vocabularyFile.path,
          reason: "id \(id) of '\(token)' is outside 0..<16777216 (an index of the embedding table)"
        )
      }
      vocabulary[token] = id
    }
    let mergesFile = directory.appendingPathComponent("merges.txt")
    let mergeLines = try Self.readText(mergesFile).split(
      separator: "\n", omittingEmptySubsequences: false)
    var special = SpecialTokens()
    var addedTokens: [String: Int] = [:]
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
      let file = directory.appendingPathComponent(name)
      guard FileManager.default.fileExists(atPath: file.path) else { continue }
      let json = try Self.readJSON(file)
      special.read(json)
      for (idText, entry) in json["added_tokens_decoder"]?.objectValue ?? [:] {
        if let id = Int(idText), let content = entry["content"]?.stringValue {
          addedTokens[content] = id
        }
      }
    }
    try self.init(
      vocabulary: vocabulary, mergeLines: mergeLines, mergesFile: mergesFile.path,
      special: special, addedTokens: addedTokens)
  }

  /// The standard CLIP vocabulary shipped with the package (`Resources/clip-merges.txt`, from
  /// open_clip's `bpe_simple_vocab_16e6.txt.gz`, MIT), for checkpoints without a tokenizer.
  /// - Parameter padToken: "<|endoftext|>" as SD 1.x's tokenizer; SD 2.x's pads with "!".
  public static func bundled(padToken: String = "<|endoftext|>") throws(ModelError) -> CLIPTokenizer
  {
    guard
      let url = Bundle.module.url(
        forResource: "clip-merges", withExtension: "txt", subdirectory: "Resources")
    else {
      throw .invalidTokenizer(
        file: "Resources/clip-merges.txt", reason: "missing from the SDModels bundle")
    }
    let lines = try Self.readText(url).split(separator: "\n")
    // CLIP's vocabulary order: the 256 byte symbols, the same with "</w>", the merge results,
    // then BOS and EOS (ids 49406 and 49407).
    let alphabet = byteAlphabetInVocabularyOrder
    var tokens = alphabet + alphabet.map { $0 + "</w>" }
    for line in lines.dropFirst() { tokens.append(line.split(separator: " ").joined()) }
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    var vocabulary: [String: Int] = [:]
    for (id, token) in tokens.enumerated() { vocabulary[token] = id }
    var special = SpecialTokens()
    special.pad = padToken
    return try CLIPTokenizer(
      vocabulary: vocabulary, mergeLines: lines, mergesFile: url.path,
      special: special, addedTokens: [:])
  }

  private init(
    vocabulary: [String: Int], mergeLines: [Substring], mergesFile: String, special: SpecialTokens,
    addedTokens: [String: Int]
  ) throws(ModelError) {
    var tokens = [String](repeating: "", count: (vocabulary.values.max() ?? 0) + 1)
    for (token, id) in vocabulary { tokens[id] = token }
    var merges: [UInt64: (rank: Int, merged: Int)] = [:]
    for (lineNumber, line) in mergeLines.enumerated()
    where !line.isEmpty && !line.hasPrefix("#version") {
      let parts = line.split(separator: " ", omittingEmptySubsequences: false)
      guard parts.count == 2, let left = vocabulary[String(parts[0])],
        let right = vocabulary[String(parts[1])],
        let merged = vocabulary[String(parts[0] + parts[1])]
      else {
        throw .invalidTokenizer(
          file: mergesFile,
          reason: "line \(lineNumber + 1) '\(line)' is not a merge of two vocabulary tokens")
      }
      let key = UInt64(left) << 32 | UInt64(right)
      if merges[key] == nil { merges[key] = (merges.count, merged) }
    }
    func id(of token: String, _ role: String) throws(ModelError) -> Int {
      if let id = vocabulary[token] ?? addedTokens[token] { return id }
      throw .invalidTokenizer(
        file: mergesFile, reason: "\(role) token '\(token)' is not in the vocabulary")
    }
    bosID = try id(of: special.bos, "bos")
    eosID = try id(of: special.eos, "eos")
    padID = try id(of: special.pad, "pad")
    unknownID = try id(of: special.unknown, "unk")
    var added = addedTokens
    for token in [special.bos, special.eos, special.pad, special.unknown] {
      added[token] = vocabulary[token] ?? added[token]
    }
    for (_, id) in added where id >= tokens.count {
      tokens += Array(repeating: "", count: id + 1 - tokens.count)
    }
    for (token, id) in added where tokens[id].isEmpty { tokens[id] = token }
    self.vocabulary = vocabulary
    self.tokens = tokens
    self.merges = merges
    self.addedTokens = added.map { (Array($0.key.unicodeScalars), $0.value) }
      .filter { !$0.0.isEmpty }.sorted { $0.0.count > $1.0.count }
  }

  /// A tokenizer file's bytes (at most 64 MB: CLIP's vocabulary is 1.5 MB).
  private static func readBytes(_ url: URL) throws(ModelError) -> [UInt8] {
    do { return try RegularFile.read(url.path, maximumBytes: 64 << 20) } catch {
      guard case .unreadableFile(_, let reason) = error else { throw .weights(error) }
      throw .invalidTokenizer(file: url.path, reason: "cannot read: \(reason)")
    }
  }

  /// A tokenizer text file as UTF-8.
  private static func readText(_ url: URL) throws(ModelError) -> String {
    guard let text = String(validating: try readBytes(url), as: UTF8.self) else {
      throw .invalidTokenizer(file: url.path, reason: "is not valid UTF-8")
    }
    return text
  }

  private static func readJSON(_ url: URL) throws(ModelError) -> JSONValue {
    let data = try readBytes(url)
    do { return try JSONValue.parse(data, allowingNonFiniteNumbers: true) } catch {
      throw .invalidTokenizer(file: url.path, reason: error.description)
    }
  }

  // MARK: Tokenizing

  // The names and meanings follow transformers' `CLIPTokenizer`, so code ported from Python
  // reads the same: `tokenize` gives token strings, `encode` ids with BOS/EOS, and `inputIDs`
  // what `tokenizer(text, padding="max_length", truncation=True).input_ids` gives.

  /// The 77 ids the text encoder takes: BOS, the first 75 token ids, EOS, padding (transformers'
  /// `tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids`).
  public func inputIDs(_ text: String) -> [Int] {
    let ids = encode(text, addSpecialTokens: false).prefix(Self.maxLength - 2)
    let framed = [bosID] + ids + [eosID]
    return framed + Array(repeating: padID, count: Self.maxLength - framed.count)
  }

  /// The token ids of `text`, neither truncated nor padded, as transformers' `encode`: framed by
  /// BOS and EOS when `addSpecialTokens` (the default), bare otherwise.
  public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
    var ids: [Int] = []
    for segment in splitAddedTokens(Array(text.unicodeScalars)) {
      switch segment {
      case .added(let id): ids.append(id)
      case .text(let scalars):
        for piece in Self.preTokenize(Self.normalize(scalars)) { ids += bytePairEncode(piece) }
      }
    }
    return addSpecialTokens ? [bosID] + ids + [eosID] : ids
  }

  /// The token strings of `text` without BOS/EOS, not truncated, as transformers' `tokenize`
  /// ("</w>" marks a word end; bytes are in GPT-2's alphabet).
  public func tokenize(_ text: String) -> [String] {
    convertIDsToTokens(encode(text, addSpecialTokens: false))
  }

  /// The token strings of `ids`, as transformers' `convert_ids_to_tokens`; an id outside the
  /// vocabulary shows as "<unknown ID>".
  public func convertIDsToTokens(_ ids: [Int]) -> [String] {
    ids.map { $0 >= 0 && $0 < tokens.count ? tokens[$0] : "<unknown \($0)>" }
  }

  private enum Segment {
    case text([Unicode.Scalar])
    case added(Int)
  }

  /// Step 1: added tokens, leftmost first, longest at a position.
  private func splitAddedTokens(_ scalars: [Unicode.Scalar]) -> [Segment] {
    var segments: [Segment] = []
    var start = 0
    var i = 0
    outer: while i < scalars.count {
      for (text, id) in addedTokens where scalars.count - i >= text.count && scalars[i] == text[0] {
        if scalars[i..<(i + text.count)].elementsEqual(text) {
          if start < i { segments.append(.text(Array(scalars[start..<i]))) }
          segments.append(.added(id))
          i += text.count
          start = i
          continue outer
        }
      }
      i += 1
    }
    if start < scalars.count { segments.append(.text(Array(scalars[start...]))) }
    return segments
  }

  /// Step 2: NFC, whitespace runs to one space, per-scalar full lower-case mapping.
  static func normalize(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
    var view = String.UnicodeScalarView()
    view.append(contentsOf: scalars)
    let composed = String(view).precomposedStringWithCanonicalMapping
    var out: [Unicode.Scalar] = []
    out.reserveCapacity(scalars.count)
    var inWhitespace = false
    for scalar in composed.unicodeScalars {
      if scalar.properties.isWhitespace {
        if !inWhitespace { out.append(" ") }
        inWhitespace = true
        continue
      }
      inWhitespace = false
      if scalar.properties.changesWhenLowercased {
        out += scalar.properties.lowercaseMapping.unicodeScalars
      } else {
        out.append(scalar)
      }
    }
    return out
  }

  private static let literalPieces: [[Unicode.Scalar]] =
    ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map {
      Array($0.unicodeScalars)
    }

  /// Step 3: the pre-tokenizer's pattern, alternatives tried in order at each position.
  static func preTokenize(_ scalars: [Unicode.Scalar], literals: Bool = true) -> [ArraySlice<
    Unicode.Scalar
  >] {
    var pieces: [ArraySlice<Unicode.Scalar>] = []
    var i = 0
    scan: while i < scalars.count {
      if literals {
        for (index, literal) in literalPieces.enumerated()
        where scalars.count - i >= literal.count
          && scalars[i..<(i + literal.count)].elementsEqual(literal)
        {
          // The byte-level step splits again with GPT-2's pattern, which cuts the special-token
          // text into "<|", the word, "|>"; the contractions stay whole.
          pieces +=
            index < 2
            ? preTokenize(Array(literal), literals: false) : [scalars[i..<(i + literal.count)]]
          i += literal.count
          continue scan
        }
      }
      let kind = ScalarKind(scalars[i])
      var end = i + 1
      switch kind {
      case .whitespace:
        i = end
        continue scan
      case .number:
        break
      case .letter, .other:
        while end < scalars.count, ScalarKind(scalars[end]) == kind { end += 1 }
      }
      pieces.append(scalars[i..<end])
      i = end
    }
    return pieces
  }

  private enum ScalarKind {
    case letter, number, whitespace, other

    init(_ scalar: Unicode.Scalar) {
      let properties = scalar.properties
      if properties.isWhitespace { self = .whitespace; return }
      switch properties.generalCategory {
      case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        self = .letter
      case .decimalNumber, .letterNumber, .otherNumber: self = .number
      default: self = .other
      }
    }
  }

  /// Step 4: byte symbols of one piece, merged by rank.
  private func bytePairEncode(_ piece: ArraySlice<Unicode.Scalar>) -> [Int] {
    var view = String.UnicodeScalarView()
    view.append(contentsOf: piece)
    let bytes = Array(String(view).utf8)
    let alphabet = Self.byteAlphabet
    var symbols = bytes.indices.map { index -> Int in
      let symbol = alphabet[Int(bytes[index])] + (index == bytes.count - 1 ? "</w>" : "")
      return vocabulary[symbol] ?? unknownID
    }
    while symbols.count > 1 {
      var best: (rank: Int, merged: Int, left: Int, right: Int)?
      for i in 0..<(symbols.count - 1) {
        if let merge = merges[UInt64(symbols[i]) << 32 | UInt64(symbols[i + 1])],
          merge.rank < best?.rank ?? .max
        {
          best = (merge.rank, merge.merged, symbols[i], symbols[i + 1])
        }
      }
      guard let best else { break }
      // Merge every occurrence of the pair, left to right, without overlaps.
      var merged: [Int] = []
      merged.reserveCapacity(symbols.count)
      var i = 0
      while i < symbols.count {
        if i + 1 < symbols.count, symbols[i] == best.left, symbols[i + 1] == best.right {
          merged.append(best.merged)
          i += 2
        } else {
          merged.append(symbols[i])
          i += 1
        }
      }
      symbols = merged
    }
    return symbols
  }

  /// GPT-2's reversible byte → printable character table: printable Latin-1 bytes map to
  /// themselves, the others to U+0100 onwards in byte order.
  static let byteAlphabet: [String] = (0..<256).map { byte in
    let printable = isPrintable(byte)
    let code = printable ? byte : 256 + (0..<byte).count { !isPrintable($0) }
    return String(Character(Unicode.Scalar(UInt32(code)) ?? "?"))
  }

  /// The byte symbols in CLIP's vocabulary order: the printable bytes, then the remapped ones.
  static let byteAlphabetInVocabularyOrder: [String] =
    (0..<256).filter(isPrintable).map { byteAlphabet[$0] }
    + (0..<256).filter { !isPrintable($0) }.map { byteAlphabet[$0] }

  private static func isPrintable(_ byte: Int) -> Bool {
    (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
  }
}

/// The special tokens named by `tokenizer_config.json` / `special_tokens_map.json`, where each is
/// either a string or `{"content": ...}`.
private struct SpecialTokens {
  var bos = "<|startoftext|>"
  var eos = "<|endoftext|>"
  var pad = "<|endoftext|>"
  var unknown = "<|endoftext|>"

  mutating func read(_ json: JSONValue) {
    func token(_ key: String) -> String? {
      json[key]?.stringValue ?? json[key]?["content"]?.stringValue
    }
    bos = token("bos_token") ?? bos
    eos = token("eos_token") ?? eos
    pad = token("pad_token") ?? pad
    unknown = token("unk_token") ?? unknown
  }
}

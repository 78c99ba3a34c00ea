// The CLIP tokenizer against transformers.CLIPTokenizer on the committed prompt corpus
// (weights/make_tokenizer_corpus.py), with the SD 1.x and SD 2.x tokenizer folders and the
// bundled vocabulary.

import Foundation
import SDModels
import SDTensor
import SDTestSupport
import Testing

private struct CorpusCase: Sendable, CustomStringConvertible {
  let prompt: String
  let ids: [Int]
  let tokens: [String]
  let sd15: [Int]
  let sd2: [Int]
  var description: String { prompt.debugDescription }
}

private let corpus: [CorpusCase] = {
  let data = try! Data(
    contentsOf: fixturesDirectory.appendingPathComponent("tokenizer-corpus.json"))
  let json = try! JSONValue.parse(data)
  func ids(_ value: JSONValue?) -> [Int] { value!.arrayValue!.map { $0.intValue! } }
  return json["cases"]!.arrayValue!.map {
    CorpusCase(
      prompt: $0["prompt"]!.stringValue!, ids: ids($0["ids"]),
      tokens: $0["tokens"]!.arrayValue!.map { $0.stringValue! }, sd15: ids($0["sd15"]),
      sd2: ids($0["sd2"]))
  }
}()

private let sd15 = try! CLIPTokenizer(
  directory: fixturesDirectory.appendingPathComponent("tiny-sd15/tokenizer"))
private let sd2 = try! CLIPTokenizer(
  directory: fixturesDirectory.appendingPathComponent("tiny-sd2/tokenizer"))
private let bundled = try! CLIPTokenizer.bundled()

@Suite struct TokenizerTests {
  @Test func corpusHasAtLeast200Prompts() {
    #expect(corpus.count >= 200)
  }

  @Test(arguments: corpus)
  fileprivate func matchesTransformers(_ entry: CorpusCase) {
    #expect(sd15.encode(entry.prompt) == entry.ids)
    #expect(sd15.tokenize(entry.prompt) == entry.tokens)
    #expect(sd15.inputIDs(entry.prompt) == entry.sd15)
    #expect(sd2.inputIDs(entry.prompt) == entry.sd2)
    #expect(bundled.inputIDs(entry.prompt) == entry.sd15)
  }

  @Test func specialIDs() {
    #expect((sd15.bosID, sd15.eosID, sd15.padID) == (49406, 49407, 49407))
    #expect(sd2.padID == 0)
    #expect(try! CLIPTokenizer.bundled(padToken: "!").inputIDs("a!") == sd2.inputIDs("a!"))
  }

  @Test func tokenStringsShowWordEnds() {
    #expect(sd15.tokenize("green tones") == ["green</w>", "tones</w>"])
    #expect(sd15.encode("green tones", addSpecialTokens: false) == [1901, 14744])
    #expect(sd15.convertIDsToTokens([49406, 49407, 1 << 20]).last == "<unknown 1048576>")
  }

  @Test func missingOrBrokenFilesAreNamed() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tok-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    #expect {
      _ = try CLIPTokenizer(directory: folder)
    } throws: { error in
      guard case .invalidTokenizer(let file, _) = error as? ModelError else { return false }
      return file.hasSuffix("vocab.json")
    }
    try Data(#"{"a": 0, "b": 1, "a</w>": 2, "<|startoftext|>": 3, "<|endoftext|>": 4}"#.utf8)
      .write(to: folder.appendingPathComponent("vocab.json"))
    try Data("#version: 0.2\na c\n".utf8).write(to: folder.appendingPathComponent("merges.txt"))
    #expect {
      _ = try CLIPTokenizer(directory: folder)
    } throws: { error in
      guard case .invalidTokenizer(let file, let reason) = error as? ModelError else {
        return false
      }
      return file.hasSuffix("merges.txt") && reason.contains("line 2")
    }
    // An id too large to index an embedding table, and one that is not a number.
    for (entry, expected) in [
      (#""b": 1000000000000"#, "id 1000000000000 of 'b' is outside 0..<16777216"),
      (#""b": "one""#, #"id of 'b' is "one", not an integer"#),
    ] {
      try Data(#"{"a": 0, \#(entry), "<|startoftext|>": 3, "<|endoftext|>": 4}"#.utf8)
        .write(to: folder.appendingPathComponent("vocab.json"))
      #expect {
        _ = try CLIPTokenizer(directory: folder)
      } throws: { error in
        guard case .invalidTokenizer(_, let reason) = error as? ModelError else { return false }
        return reason.hasPrefix(expected)
      }
    }
  }
}

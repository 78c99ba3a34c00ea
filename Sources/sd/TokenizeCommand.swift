// `sd tokenize [--model PATH] [--ids] TEXT`: shows how a prompt is split into CLIP tokens, so
// users can see how long their (negative) prompt is against the 75-token window.

import Foundation
import SDModels

enum TokenizeCommand {
  static let specs: [OptionSpec] = [
    OptionSpec(
      name: "model", valueName: "PATH", defaultValue: "bundled CLIP vocabulary",
      help: "use PATH/tokenizer"),
    OptionSpec(
      name: "ids", valueName: nil, defaultValue: nil,
      help: "print only the 77 padded ids on one line"),
    .help,
  ]

  static func run(_ words: [String]) throws -> Int32 {
    guard
      let arguments = try parsedOrHelp(
        words, specs: specs, usage: "sd tokenize [--model PATH] [--ids] TEXT",
        summary: "Show the CLIP tokens of a prompt.")
    else { return 0 }
    guard arguments.positional.count == 1 else {
      throw UsageError(
        "tokenize takes one TEXT argument (quote the prompt), got \(arguments.positional.count)")
    }
    let text = arguments.positional[0]
    let tokenizer: CLIPTokenizer
    if let model = try arguments.existingPath("model") {
      tokenizer = try ModelFolder(at: model).tokenizer
    } else {
      tokenizer = try CLIPTokenizer.bundled()
    }
    if arguments.has("ids") {
      print(tokenizer.inputIDs(text).map(String.init).joined(separator: " "))
      return 0
    }
    let ids = tokenizer.encode(text, addSpecialTokens: false)
    let window = CLIPTokenizer.maxLength - 2
    print("\(ids.count) tokens (the window holds \(window))")
    for (index, (id, token)) in zip(ids, tokenizer.convertIDsToTokens(ids)).enumerated() {
      let marker = index >= window ? "  (cut)" : ""
      print(
        "\(String(index + 1).padding(toLength: 4, withPad: " ", startingAt: 0)) \(String(id).padding(toLength: 6, withPad: " ", startingAt: 0)) \(token)\(marker)"
      )
    }
    return 0
  }
}

// The one error type of SDModels: configurations, tokenizer files and weights that do not fit.

import Foundation
import SDTensor

/// A problem building a model or tokenizer from the files of a checkpoint.
public enum ModelError: Error, CustomStringConvertible, Sendable, Equatable {
  /// A weights file could not be read, or a tensor is missing or has the wrong shape.
  case weights(WeightError)
  /// A configuration file is missing, unreadable or has a value this runtime cannot use.
  case invalidConfiguration(file: String, reason: String)
  /// Tokenizer files are missing or inconsistent.
  case invalidTokenizer(file: String, reason: String)
  /// Weights are left over after building a model: a sign the checkpoint and code disagree.
  case unusedWeights(keys: [String], file: String)
  /// A LoRA file, or one of its keys, cannot be read or does not fit the model.
  case invalidLoRA(file: String, key: String, reason: String)

  /// One line naming the file (and key where there is one) and what is wrong with it.
  public var description: String {
    switch self {
    case .weights(let error): return error.description
    case .invalidConfiguration(let file, let reason): return "\(file): \(reason)"
    case .invalidTokenizer(let file, let reason): return "tokenizer \(file): \(reason)"
    case .invalidLoRA(let file, let key, let reason):
      return key == "-" ? "LoRA \(file): \(reason)" : "LoRA \(file): '\(key)' \(reason)"
    case .unusedWeights(let keys, let file):
      let shown = keys.prefix(5).joined(separator: ", ")
      return
        "\(file) has \(keys.count) tensors no layer reads (\(shown)\(keys.count > 5 ? ", ..." : ""))"
    }
  }
}

extension ModelError: LocalizedError {
  /// The description, so that `localizedDescription` says what went wrong.
  public var errorDescription: String? { description }
}

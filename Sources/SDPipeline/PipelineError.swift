// The one error type of SDPipeline: bad requests, scheduler configurations, images and outputs.

import Foundation
import SDModels
import SDTensor

/// A problem with a generation request, a scheduler configuration, an input image or an output
/// path. Each message names what was wrong and, where it helps, how to fix it.
public enum PipelineError: Error, CustomStringConvertible, Sendable, Equatable {
  /// A model part could not be built from its files.
  case model(ModelError)
  /// A request or option value is out of range (`name` is the parameter or CLI option).
  case invalidArgument(name: String, reason: String)
  /// `scheduler_config.json` is missing a value or has one this runtime cannot use.
  case invalidSchedulerConfiguration(file: String, reason: String)
  /// An input image could not be read or decoded.
  case unreadableImage(path: String, reason: String)
  /// An output file could not be written; nothing was left at the path.
  case unwritableOutput(path: String, reason: String)
  /// Something exists at an output path that was not to be replaced; it was left as it was.
  case outputExists(path: String)
  /// A generation produced a NaN or infinity (`stage`); `suspects` names what can cause it.
  case nonFinite(stage: String, suspects: String)
  /// The request would need more memory than the process can get (`AvailableMemory`): `what`
  /// says which request, `needed` and `available` are bytes, `limit` names the bound.
  case insufficientMemory(what: String, needed: Int, available: Int, limit: String)
  /// The progress callback or the options' cancellation flag asked to stop.
  case cancelled

  /// The message `sd` prints, naming the file, option or stage.
  public var description: String {
    switch self {
    case .model(let error): return error.description
    case .invalidArgument(let name, let reason): return "\(name): \(reason)"
    case .invalidSchedulerConfiguration(let file, let reason):
      return "scheduler config \(file): \(reason)"
    case .unreadableImage(let path, let reason): return "cannot read image \(path): \(reason)"
    case .unwritableOutput(let path, let reason): return "cannot write \(path): \(reason)"
    case .outputExists(let path): return "\(path) exists (use --overwrite to replace it)"
    case .nonFinite(let stage, let suspects):
      return "\(stage) became NaN or infinite (check \(suspects)); nothing was written"
    case .insufficientMemory(let what, let needed, let available, let limit):
      let gigabytes = { (bytes: Int) in String(format: "%.1f GB", Double(bytes) / 1e9) }
      return
        "\(what) needs about \(gigabytes(needed)) of working memory, and \(gigabytes(available)) are left under \(limit); choose a smaller size"
    case .cancelled: return "cancelled"
    }
  }
}

extension PipelineError: LocalizedError {
  /// The description, so that `localizedDescription` says what went wrong.
  public var errorDescription: String? { description }
}

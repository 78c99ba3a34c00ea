// The one error type of SDTensor: everything that can go wrong reading weights from a file, or
// writing a file.

import Foundation

/// A problem with a weights file or with a tensor read from it. Every case names the file.
public enum WeightError: Error, CustomStringConvertible, Sendable, Equatable {
  /// The file could not be opened, mapped or read.
  case unreadableFile(path: String, reason: String)
  /// The file is not a valid safetensors file (truncated, bad header, bad offsets, ...).
  case malformedFile(path: String, reason: String)
  /// A tensor the model needs is not in the file.
  case missingTensor(key: String, file: String)
  /// A tensor has another shape than the model's configuration implies.
  case shapeMismatch(key: String, expected: [Int], found: [Int], file: String)
  /// A tensor is stored in a dtype this runtime does not read.
  case unsupportedDType(key: String, dtype: String, file: String)
  /// The file could not be written.
  case unwritableFile(path: String, reason: String)
  /// Something exists at the destination and the write was told not to replace it.
  case destinationExists(path: String)
  /// The file is not a torch.save archive this runtime reads (bad ZIP structure, legacy format,
  /// an opcode torch does not write for tensors, inconsistent tensor sizes, ...).
  case malformedTorchFile(path: String, reason: String)
  /// The pickle of a torch file names a Python callable that is not one of torch's tensor
  /// constructors (`os.system`, `builtins.eval`, ...); nothing was run.
  case refusedPickleGlobal(path: String, global: String)

  /// One line naming the file and, where there is one, the tensor key, shapes or dtype, with a
  /// hint where one helps.
  public var description: String {
    switch self {
    case .unreadableFile(let path, let reason):
      return "cannot read \(path): \(reason)"
    case .malformedFile(let path, let reason):
      return "\(path) is not a valid safetensors file: \(reason)"
    case .missingTensor(let key, let file):
      return "\(file) has no tensor '\(key)' (is this the right model folder or checkpoint?)"
    case .shapeMismatch(let key, let expected, let found, let file):
      return "tensor '\(key)' in \(file) has shape \(found), expected \(expected)"
        + " (does the config.json belong to these weights?)"
    case .unsupportedDType(let key, let dtype, let file):
      return
        "tensor '\(key)' in \(file) has dtype \(dtype); only F32, F16 and BF16 tensors can be read"
    case .unwritableFile(let path, let reason):
      return "cannot write \(path): \(reason)"
    case .destinationExists(let path):
      return "\(path) exists and was not replaced"
    case .malformedTorchFile(let path, let reason):
      return "\(path) is not a readable torch file: \(reason)"
    case .refusedPickleGlobal(let path, let global):
      return "refusing to load \(path): the pickle calls \(global), which is not a tensor"
        + " (only torch's tensor-rebuilding functions are allowed; nothing was run)"
    }
  }
}

extension WeightError: LocalizedError {
  /// The description, so that `localizedDescription` says what went wrong.
  public var errorDescription: String? { description }
}

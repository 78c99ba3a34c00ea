// Textual-inversion embeddings (Gal et al. 2022): learned token vectors that a prompt uses by
// name. Read from safetensors in the two common layouts: the web UIs' `emb_params` (the name is
// the file's stem) and diffusers' `{"<token>": vectors}`.

import Foundation
import SDTensor

/// One or more learned token vectors, used in a prompt by `name`.
public struct TextualInversion: Sendable {
  /// The word that stands for the vectors in a prompt (matched whole-word, ignoring case).
  public let name: String
  /// `[vectors, hidden]`.
  public let vectors: Tensor

  /// An embedding of `vectors` `[vectors, hidden]` used where a prompt says `name`.
  public init(name: String, vectors: Tensor) {
    self.name = name
    self.vectors = vectors
  }

  /// Loads every embedding of a `.safetensors` file.
  /// - Throws: `PipelineError.invalidArgument` for a pickle (`.pt`, `.bin`; loading one can
  ///   run code), an unreadable file, tensors that are not `[hidden]` / `[n, hidden]`, or values
  ///   that are not finite.
  public static func load(contentsOf url: URL) throws(PipelineError) -> [TextualInversion] {
    let suffix = url.pathExtension.lowercased()
    guard suffix == "safetensors" else {
      let pickle = ["pt", "bin", "ckpt", "pth", "pkl"].contains(suffix)
      throw .invalidArgument(
        name: "embedding",
        reason: pickle
          ? "\(url.path): only .safetensors embeddings are read (a .pt/.bin pickle can run code when loaded)"
          : "\(url.path) is not a .safetensors file")
    }
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: url.path) } catch {
      throw .invalidArgument(name: "embedding", reason: error.description)
    }
    var result: [TextualInversion] = []
    for key in file.names.sorted() {
      let tensor: Tensor
      do { tensor = try file.tensor(key) } catch {
        throw .invalidArgument(name: "embedding", reason: error.description)
      }
      guard tensor.shape.count == 1 || tensor.shape.count == 2, tensor.count > 0 else {
        throw .invalidArgument(
          name: "embedding",
          reason:
            "\(url.path): '\(key)' has shape \(tensor.shape), expected [hidden] or [n, hidden]")
      }
      // A NaN or infinity would turn every image that uses the word black.
      guard tensor.scalars.allSatisfy(\.isFinite) else {
        throw .invalidArgument(
          name: "embedding", reason: "\(url.path): '\(key)' holds a NaN or infinite value")
      }
      let name = key == "emb_params" ? url.deletingPathExtension().lastPathComponent : key
      result.append(
        TextualInversion(
          name: name,
          vectors: tensor.shape.count == 1 ? tensor.reshaped([1, tensor.count]) : tensor))
    }
    guard !result.isEmpty else {
      throw .invalidArgument(name: "embedding", reason: "\(url.path) holds no tensors")
    }
    return result
  }
}

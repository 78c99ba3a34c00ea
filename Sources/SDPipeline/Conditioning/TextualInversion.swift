// Textual-inversion embeddings (Gal et al. 2022): learned token vectors that a prompt uses by
// name. Read from safetensors or torch `.pt`/`.bin` files in the two common layouts: the web
// UIs' (`emb_params`, or A1111's `string_to_param`; the name is the file's stem) and diffusers'
// `{"<token>": vectors}`.

import Foundation
import SDTensor

/// One or more learned token vectors, used in a prompt by `name`.
public struct TextualInversion: Sendable {
  /// The word that stands for the vectors in a prompt (matched whole-word, ignoring case).
  public let name: String
  /// `[vectors, hidden]`.
  public let vectors: Tensor
  /// The text encoder the vectors are for, by position (SDXL files: 0 for `clip_l`, 1 for
  /// `clip_g`); nil: every encoder of their width.
  public let encoderIndex: Int?

  /// An embedding of `vectors` `[vectors, hidden]` used where a prompt says `name`, in the text
  /// encoder at `encoderIndex` (nil: each one of its width).
  public init(name: String, vectors: Tensor, encoderIndex: Int? = nil) {
    self.name = name
    self.vectors = vectors
    self.encoderIndex = encoderIndex
  }

  /// Loads every embedding of a `.safetensors` file or of a torch `.pt`/`.bin`/`.pth` file. A
  /// torch file's pickle is read by `TorchPickle`, which runs nothing and refuses any pickle that
  /// names more than tensors and plain values. Layouts: the web UIs' (`emb_params` in
  /// safetensors, AUTOMATIC1111's `string_to_param['*']` in `.pt`; the name is the file's stem)
  /// and diffusers' (`{"<token>": vectors}`, as in `learned_embeds.bin`; the name is the key).
  /// - Throws: `PipelineError.invalidArgument` for another extension (`.ckpt` checkpoints, bare
  ///   `.pkl` pickles), an unreadable file, a pickle that names anything but torch's tensor
  ///   constructors, another layout, tensors that are not `[hidden]` / `[n, hidden]`, or values
  ///   that are not finite.
  public static func load(contentsOf url: URL) throws(PipelineError) -> [TextualInversion] {
    let suffix = url.pathExtension.lowercased()
    let stem = url.deletingPathExtension().lastPathComponent
    let found: [(key: String, name: String, tensor: Tensor)]
    switch suffix {
    case "safetensors": found = try safeTensorsEmbeddings(url, stem: stem)
    case "pt", "bin", "pth": found = try torchEmbeddings(url, stem: stem)
    default:
      throw .invalidArgument(
        name: "embedding",
        reason: ["ckpt", "pkl"].contains(suffix)
          ? "\(url.path): a .\(suffix) file is not read as an embedding (embeddings are"
            + " .safetensors, .pt or .bin files)"
          : "\(url.path) is not a .safetensors, .pt or .bin file")
    }
    var result: [TextualInversion] = []
    for (key, name, tensor) in found {
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
      result.append(
        TextualInversion(
          name: name,
          vectors: tensor.shape.count == 1 ? tensor.reshaped([1, tensor.count]) : tensor,
          encoderIndex: ["clip_l": 0, "clip_g": 1][key]))
    }
    guard !result.isEmpty else {
      throw .invalidArgument(name: "embedding", reason: "\(url.path) holds no tensors")
    }
    return result
  }

  /// Keys that stand for the file's own word: the web UIs' `emb_params`, and SDXL files'
  /// `clip_l` / `clip_g` (one vector set per text encoder; each encoder takes the set of its
  /// width).
  private static let fileNamedKeys: Set<String> = ["emb_params", "clip_l", "clip_g"]

  private static func safeTensorsEmbeddings(_ url: URL, stem: String) throws(PipelineError)
    -> [(key: String, name: String, tensor: Tensor)]
  {
    var found: [(key: String, name: String, tensor: Tensor)] = []
    do {
      let file = try SafeTensorsFile(path: url.path)
      for key in file.names.sorted() {
        found.append((key, fileNamedKeys.contains(key) ? stem : key, try file.tensor(key)))
      }
    } catch {
      throw .invalidArgument(name: "embedding", reason: error.description)
    }
    return found
  }

  private static func torchEmbeddings(_ url: URL, stem: String) throws(PipelineError)
    -> [(key: String, name: String, tensor: Tensor)]
  {
    func invalid(_ reason: String) -> PipelineError {
      .invalidArgument(name: "embedding", reason: reason)
    }
    let object: TorchValue
    do { object = try TorchPickle.load(contentsOf: url.path) } catch {
      throw invalid(error.description)
    }
    let unknownLayout = invalid(
      "\(url.path) is neither an AUTOMATIC1111 embedding ({'string_to_param': {'*': tensor}, ...})"
        + " nor a diffusers one ({token: tensor})")
    guard let entries = object.dictEntries else { throw unknownLayout }
    var tensors: [(key: String, name: String, tensor: TorchTensor)] = []
    if let parameters = object["string_to_param"] {
      // AUTOMATIC1111's textual_inversion.py saves one term, '*', and refuses files with more.
      guard let terms = parameters.dictEntries, terms.count == 1,
        let tensor = terms[0].value.tensorValue
      else { throw invalid("\(url.path): 'string_to_param' should hold exactly one tensor") }
      tensors = [("string_to_param", stem, tensor)]
    } else {
      for entry in entries {
        guard let key = entry.key.stringValue, let tensor = entry.value.tensorValue else {
          throw unknownLayout
        }
        tensors.append((key, fileNamedKeys.contains(key) ? stem : key, tensor))
      }
    }
    var found: [(key: String, name: String, tensor: Tensor)] = []
    do {
      for (key, name, tensor) in tensors { found.append((key, name, try tensor.float32())) }
    } catch {
      throw invalid(error.description)
    }
    return found
  }
}

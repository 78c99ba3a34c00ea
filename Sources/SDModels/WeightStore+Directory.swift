// Finding the weights file of a diffusers model folder (`unet/`, `vae/`, `text_encoder/`).

import Foundation
import SDTensor

extension WeightStore {
  /// Opens `<stem>.safetensors` in `directory`, or the `<stem>.fp16.safetensors` variant that
  /// diffusers writes for half-precision checkpoints. When both exist (as in the released SD
  /// repositories) and weights are kept in half precision, the variant is opened: it holds the
  /// same values the full file would be rounded to, and half-precision data is used in place.
  /// - Throws: `ModelError.weights` when neither exists (naming a pickle `.bin` if that is all
  ///   there is, which is refused: loading it would run arbitrary code) or the file is invalid.
  public static func open(
    directory: URL, stem: String, keepsHalfPrecision: Bool = false
  ) throws(ModelError) -> WeightStore {
    let manager = FileManager.default
    let names = ["\(stem).safetensors", "\(stem).fp16.safetensors"]
    for name in keepsHalfPrecision ? names.reversed() : names {
      let path = directory.appendingPathComponent(name).path
      if manager.fileExists(atPath: path) {
        do {
          return try WeightStore(paths: [path], keepsHalfPrecision: keepsHalfPrecision)
        } catch { throw .weights(error) }
      }
    }
    let pickle = directory.appendingPathComponent("\(stem).bin").path
    let reason =
      manager.fileExists(atPath: pickle)
      ? "only a PyTorch pickle (\(stem).bin) is there; convert it to safetensors (pickles can run code)"
      : "no \(stem).safetensors or \(stem).fp16.safetensors"
    throw .weights(.unreadableFile(path: directory.path, reason: reason))
  }
}

// Single-file checkpoints of a few bytes: the tensor names of a released layout with 1-element
// tensors, for tests of how a file is recognised (no model is built from them).

import Foundation
import SDTensor

/// Writes a temporary SDXL single file holding one tensor under each part's prefix, named as
/// in `sd_xl_base_1.0.safetensors`, and returns its URL; the caller removes it.
public func writeSyntheticSDXLSingleFile() throws -> URL {
  let url = FileManager.default.temporaryDirectory.appendingPathComponent(
    "sdxl-keys-\(UUID().uuidString).safetensors")
  let names = [
    "model.diffusion_model.label_emb.0.0.weight", "first_stage_model.decoder.conv_in.weight",
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
  ]
  try SafeTensorsWriter.write(
    Dictionary(uniqueKeysWithValues: names.map { ($0, Tensor(zeros: [1])) }), to: url.path)
  return url
}

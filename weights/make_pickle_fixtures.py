"""Torch `.pt`/`.bin` files for the Swift restricted unpickler (Sources/SDTensor/Storage/TorchPickle.swift).

Regenerate (after make_prompt_fixtures.py has written weights/fixtures/embeddings/*.safetensors):

    python3 weights/make_pickle_fixtures.py

Nothing written here is ever loaded with pickle or torch.load; the hostile files are built from
hand-written pickle bytes or pickled with a __reduce__ that names the callable, never run.

weights/fixtures/embeddings/ (torch.save of the tensors in bad-hands/cat-toy.safetensors):
  bad-hands.pt         A1111 textual-inversion layout, emb_params as string_to_param['*'], F32,
                       requires_grad (as the web UI saves after training)
  bad-hands-fp16.pt    the same in F16 (values = the F32 ones rounded to half)
  learned_embeds.bin   diffusers' layout {"cat-toy": vector}; the vector is row 3 of a [5, 32]
                       table, so its storage holds the whole table and it starts at offset 96
                       (as older diffusers scripts saved `weight[placeholder_token_id]`)
  evil.pt              A1111 layout whose 'name' is `posix.system("echo pwned")` (a real torch.save
                       archive; the reader must refuse it naming posix.system)

weights/fixtures/torch/:
  tensors.pt           torch.save of a dict: F32/F16/BF16, a transposed, a permuted, a sliced
                       (storage offset, shared storage), an expanded (stride 0), a 0-d and an empty
                       tensor, an nn.Parameter, an int64 tensor, a Linear state_dict (OrderedDict
                       with _metadata set by BUILD), a torch.Size and plain Python values
  tensors.safetensors  the expected values of every float tensor of tensors.pt as contiguous F32
                       (state_dict.weight/.bias for the state dict; the 0-d scalar as [1]),
                       metadata `python` = the plain values as JSON
  protocol4.pt         {"f32": the same f32 tensor} saved with pickle_protocol=4 (FRAME, MEMOIZE,
                       SHORT_BINUNICODE, STACK_GLOBAL)
  legacy.pt            {"f32": ...} saved with _use_new_zipfile_serialization=False (the format of
                       torch < 1.6; its storage key is a memory address, so its bytes vary by run)
  os-system.pt         zip archive whose data.pkl is GLOBAL os.system + REDUCE
  builtins-eval.pt     protocol 4: STACK_GLOBAL builtins.eval + REDUCE
  inst.pt              INST os.system (protocol 0 instance creation)
  obj.pt               OBJ on collections.OrderedDict (an allowed global, a refused opcode)
"""

import io
import json
import os
import struct
import sys
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import save_file  # noqa: E402  (byte-deterministic writer)

EMBEDDINGS = os.path.join(HERE, "fixtures", "embeddings")
TORCH = os.path.join(HERE, "fixtures", "torch")
COMMAND = "python3 weights/make_pickle_fixtures.py"


class Call:
    """Pickles as `function(*args)` (a REDUCE of the global); only ever pickled, never loaded."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def save(obj, path, **kwargs):
    # torch.save names the archive's top folder after the file; the bytes are deterministic
    # (fixed zip timestamps, serialization_id from the content).
    torch.save(obj, path, **kwargs)
    print("wrote", os.path.relpath(path, HERE), os.path.getsize(path), "bytes")


def write_archive(path, pickle_bytes):
    """A torch-style zip (stored entries, top folder named after the file) around `pickle_bytes`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in [("data.pkl", pickle_bytes), ("byteorder", b"little"), ("version", b"3\n")]:
            info = zipfile.ZipInfo(f"{stem}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    print("wrote", os.path.relpath(path, HERE), len(buffer.getvalue()), "bytes")


def unicode(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def short_unicode(text):
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data + b"\x94"


def write_embeddings():
    bad_hands = load_file(os.path.join(EMBEDDINGS, "bad-hands.safetensors"))["emb_params"]
    cat_toy = load_file(os.path.join(EMBEDDINGS, "cat-toy.safetensors"))["cat-toy"]

    def a1111(vec):
        # The keys textual_inversion.py of AUTOMATIC1111's web UI writes (Embedding.save).
        return {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "bad-hands",
                "step": 1500, "sd_checkpoint": "a9263745", "sd_checkpoint_name": "v1-5-pruned-emaonly"}

    save(a1111(bad_hands.clone().requires_grad_(True)), os.path.join(EMBEDDINGS, "bad-hands.pt"))
    save(a1111(bad_hands.half()), os.path.join(EMBEDDINGS, "bad-hands-fp16.pt"))
    table = torch.randn(5, 32, generator=torch.Generator().manual_seed(11))
    table[3] = cat_toy
    save({"cat-toy": table[3]}, os.path.join(EMBEDDINGS, "learned_embeds.bin"))
    evil = a1111(bad_hands.clone())
    evil["name"] = Call(os.system, "echo pwned")
    save(evil, os.path.join(EMBEDDINGS, "evil.pt"))


def write_tensors():
    generator = torch.Generator().manual_seed(3)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    base = randn(4, 6)
    torch.manual_seed(5)
    linear = torch.nn.Linear(3, 2)
    plain = {"int": 7, "big": 2**40, "negative": -3, "float": 0.25, "none": None, "true": True,
             "false": False, "text": "h\u00e9llo \u2713", "list": [1, "a", [2.5]], "tuple": [1, 2, 3]}
    tensors = {
        "f32": randn(3, 5),
        "f16": randn(4, 3).half(),
        "bf16": randn(2, 7).bfloat16(),
        "transposed": randn(5, 3).t(),
        "permuted": randn(2, 3, 4).permute(2, 0, 1),
        "slice": base[1:3, 2:5],
        "row": base[2],
        "expanded": randn(3, 1).expand(3, 4),
        "scalar": torch.tensor(2.5),
        "parameter": torch.nn.Parameter(randn(6)),
    }
    obj = dict(tensors)
    obj.update({"empty": torch.zeros(0, 4), "long": torch.arange(5), "state_dict": linear.state_dict(),
                "size": torch.Size([2, 3]), "python": {**plain, "tuple": tuple(plain["tuple"])}})
    os.makedirs(TORCH, exist_ok=True)
    save(obj, os.path.join(TORCH, "tensors.pt"))
    expected = {name: t.detach().float().contiguous() for name, t in tensors.items()}
    expected["scalar"] = expected["scalar"].reshape(1)  # (the writer cannot store a 0-d tensor)
    expected.update({f"state_dict.{k}": v.detach() for k, v in linear.state_dict().items()})
    save_file(expected, os.path.join(TORCH, "tensors.safetensors"),
              metadata={"command": COMMAND, "torch": torch.__version__, "python": json.dumps(plain)})
    print("wrote fixtures/torch/tensors.safetensors")
    save({"f32": tensors["f32"]}, os.path.join(TORCH, "protocol4.pt"), pickle_protocol=4)
    save({"f32": tensors["f32"]}, os.path.join(TORCH, "legacy.pt"), _use_new_zipfile_serialization=False)


def write_hostile():
    # GLOBAL 'os system', the argument tuple, REDUCE: what a malicious .pt does.
    write_archive(os.path.join(TORCH, "os-system.pt"),
                  b"\x80\x02}q\x00X\x04\x00\x00\x00nameq\x01cos\nsystem\nq\x02"
                  + unicode("echo pwned") + b"\x85q\x03Rq\x04s.")
    # Protocol 4: the module and name are strings on the stack, STACK_GLOBAL joins them.
    body = short_unicode("builtins") + short_unicode("eval") + b"\x93\x94" + short_unicode("1+1") + b"\x85R."
    write_archive(os.path.join(TORCH, "builtins-eval.pt"),
                  b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body)
    # INST reads module and name as text lines and calls the class with the marked arguments.
    write_archive(os.path.join(TORCH, "inst.pt"), b"(" + unicode("echo pwned") + b"ios\nsystem\n.")
    # OBJ calls the class below the mark: an allowed global, but an opcode torch.save never emits.
    write_archive(os.path.join(TORCH, "obj.pt"), b"\x80\x02(ccollections\nOrderedDict\no.")


def main():
    torch.set_num_threads(1)
    write_embeddings()
    write_tensors()
    write_hostile()


if __name__ == "__main__":
    main()

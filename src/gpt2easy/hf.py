"""Hugging Face's GPT-2 folder format, both ways, without torch or TensorFlow.

A folder as `transformers` saves it: `config.json` (GPT-2 architecture and sizes),
`model.safetensors` (the weights under transformers' names), `generation_config.json`, and the
tokenizer as `vocab.json` + `merges.txt` (byte for byte OpenAI's `encoder.json` + `vocab.bpe`)
and/or `tokenizer.json` (what transformers 5 writes alone). Such a folder is a model folder here:
`read_hparams`, `vocab_texts` (hf_vocab.py) and `read_tensors` give hparams, vocabulary and
OpenAI-named weights from it, and `write_folder` makes one from any of our models (what
`export.py --format hf` writes).

Names: transformers' `Conv1D` stores `[n_in, n_out]` like OpenAI's `[1, n_in, n_out]` convolutions,
so weights map one to one (`transformer.h.3.attn.c_attn.weight` <-> `model/h3/attn/c_attn/w`) with
the leading 1 added or dropped; the output layer is tied to `wte` (`lm_head.weight` is not stored).

The safetensors reader is ours (the format is an 8-byte header length, a JSON header and raw
little-endian bytes): it reads bfloat16 with NumPy alone and names truncation precisely. Files are
written with the `safetensors` package.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_path, atomic_write_text
from .folders import HF_CONFIG, HF_TOKENIZER
from .hf_vocab import ENDOFTEXT, eot_id, read_json_object, tokenizer_json
from .hparams import HParams

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
_ST_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
              "F64": np.dtype("<f8")}
_BLOCK = {"ln_1.weight": "ln_1/g", "ln_1.bias": "ln_1/b", "attn.c_attn.weight": "attn/c_attn/w",
          "attn.c_attn.bias": "attn/c_attn/b", "attn.c_proj.weight": "attn/c_proj/w",
          "attn.c_proj.bias": "attn/c_proj/b", "ln_2.weight": "ln_2/g", "ln_2.bias": "ln_2/b",
          "mlp.c_fc.weight": "mlp/c_fc/w", "mlp.c_fc.bias": "mlp/c_fc/b",
          "mlp.c_proj.weight": "mlp/c_proj/w", "mlp.c_proj.bias": "mlp/c_proj/b"}
_TOP = {"wte.weight": "model/wte", "wpe.weight": "model/wpe", "ln_f.weight": "model/ln_f/g",
        "ln_f.bias": "model/ln_f/b"}
# Buffers older transformers saved beside the weights (causal mask), and the tied output layer.
_IGNORED = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$|^lm_head\.weight$")


def hf_name(name: str) -> str:
    """transformers' name of an OpenAI-named weight."""
    m = re.fullmatch(r"model/h(\d+)/(.+)", name)
    if m:
        block = {v: k for k, v in _BLOCK.items()}[m.group(2)]
        return f"transformer.h.{m.group(1)}.{block}"
    return "transformer." + {v: k for k, v in _TOP.items()}[name]


def openai_name(name: str) -> str:
    """OpenAI's name of a transformers weight (the name itself when it is not a GPT-2 weight)."""
    short = name.removeprefix("transformer.")
    m = re.fullmatch(r"h\.(\d+)\.(.+)", short)
    if m and m.group(2) in _BLOCK:
        return f"model/h{m.group(1)}/{_BLOCK[m.group(2)]}"
    return _TOP.get(short, name)


# --- config.json ----------------------------------------------------------------------------------

def hparams_from_config(path: str | Path) -> HParams:
    """Our hparams from a transformers `config.json`, refusing anything but GPT-2's architecture."""
    path = Path(path)
    config = read_json_object(path, missing_ok=False)
    archs = config.get("architectures") or []
    if config.get("model_type") != "gpt2":
        raise UserError(f"{path}: model_type {config.get('model_type')!r} ({', '.join(archs) or '?'}) "
                        f"is not GPT-2; only GPT-2-architecture models (model_type gpt2) load here")
    checks = [("activation_function", config.get("activation_function", "gelu_new"),
               ("gelu_new", "gelu_pytorch_tanh")),
              ("layer_norm_epsilon", config.get("layer_norm_epsilon", 1e-5), (1e-5,)),
              ("tie_word_embeddings", config.get("tie_word_embeddings", True), (True,)),
              ("scale_attn_weights", config.get("scale_attn_weights", True), (True,)),
              ("scale_attn_by_inverse_layer_idx",
               config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
              ("add_cross_attention", config.get("add_cross_attention", False), (False,))]
    n_embd = config.get("n_embd")
    checks.append(("n_inner", config.get("n_inner"), (None, 4 * n_embd if isinstance(n_embd, int) else 0)))
    for key, value, allowed in checks:
        if value not in allowed:
            raise UserError(f"{path}: {key}={value!r} differs from GPT-2's ({allowed[0]!r}); "
                            f"this model is not the GPT-2 architecture gpt2easy implements")
    data = {"n_vocab": config.get("vocab_size"), "n_ctx": config.get("n_positions"),
            "n_embd": n_embd, "n_head": config.get("n_head"), "n_layer": config.get("n_layer")}
    return HParams.from_dict(data, source=str(path))


def read_hparams(folder: str | Path) -> HParams:
    """A model folder's hparams: `hparams.json`, else a Hugging Face `config.json`."""
    folder = Path(folder)
    if not (folder / "hparams.json").is_file() and (folder / HF_CONFIG).is_file():
        return hparams_from_config(folder / HF_CONFIG)
    return HParams.from_json(folder / "hparams.json")


def config_dict(hp: HParams, eot: int, dtype: str = "float32") -> dict:
    """transformers' `config.json` for a GPT-2 of shape `hp` (GPT2LMHeadModel, tied embeddings)."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": hp.n_vocab,
            "n_positions": hp.n_ctx, "n_embd": hp.n_embd, "n_layer": hp.n_layer, "n_head": hp.n_head,
            "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "initializer_range": 0.02,
            "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True,
            "bos_token_id": eot, "eos_token_id": eot, "dtype": dtype}


# --- model.safetensors ----------------------------------------------------------------------------

def _header(path: Path) -> tuple[dict, int]:
    """(header, offset of the data) of a safetensors file, every entry checked to lie in the file."""
    def bad(reason: str) -> UserError:
        return UserError(f"{path}: not a complete safetensors file ({reason}); download or export "
                         f"it again")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 1 << 28:
                raise bad(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    header.pop("__metadata__", None)
    room = size - 8 - n
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = _ST_DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise bad(f"{name}: unsupported entry {str(entry)[:80]}") from None
        if end > room:
            raise bad(f"{name} ends at byte {end} of the data, which has {room}: truncated")
        if not 0 <= begin <= end or end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise bad(f"{name}: offsets {begin}-{end} do not fit shape {shape}")
    return header, 8 + n


def list_tensors(path: str | Path) -> dict[str, list[int]]:
    """OpenAI names and shapes of a `model.safetensors` (convolution weights get their leading 1)."""
    header, _ = _header(Path(path))
    out = {}
    for name, entry in header.items():
        if _IGNORED.match(name):
            continue
        key = openai_name(name)
        conv = key.endswith("/w")
        out[key] = [1, *entry["shape"]] if conv else list(entry["shape"])
    return out


def read_tensors(path: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Float32 weights by OpenAI name from a `model.safetensors` (all when `names` is None)."""
    path = Path(path)
    header, start = _header(path)
    by_name = {openai_name(k): k for k in header if not _IGNORED.match(k)}
    missing = [n for n in names or () if n not in by_name]
    if missing:
        raise UserError(f"{path}: no tensor {missing[0]} ({hf_name(missing[0])})")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}

    def load(hname: str) -> np.ndarray:
        entry = header[hname]
        begin, end = entry["data_offsets"]
        raw = data[start + begin: start + end].view(_ST_DTYPES[entry["dtype"]])
        if entry["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return np.array(raw, dtype=np.float32).reshape(entry["shape"])  # a copy: the file may go

    for key in names if names is not None else list(by_name):
        value = load(by_name[key])
        out[key] = value[None] if key.endswith("/w") else value
    if "lm_head.weight" in header and (names is None or "model/wte" in names):
        if not np.array_equal(load("lm_head.weight"), out["model/wte"]):
            raise UserError(f"{path}: lm_head.weight differs from the token embedding; GPT-2's "
                            f"output layer is tied to it (an untied model does not load here)")
    return out


def write_weights(path: str | Path, weights: dict[str, np.ndarray], dtype: str = "float32") -> None:
    """Write OpenAI-named weights as transformers' `model.safetensors`, atomically."""
    from safetensors.numpy import save_file

    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "bfloat16":
        import ml_dtypes

        np_dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        np_dtype = np.dtype(dtype)
    tensors = {hf_name(k): np.ascontiguousarray((v[0] if k.endswith("/w") else v).astype(np_dtype))
               for k, v in weights.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None


# --- a whole folder -------------------------------------------------------------------------------

def write_folder(out: str | Path, hp: HParams, weights: dict[str, np.ndarray], vocab: tuple[str, str],
                 dtype: str = "float32") -> list[str]:
    """Write a transformers GPT-2 folder (weights first, config.json last); returns the file names."""
    out = Path(out)
    encoder_text, merges_text = vocab
    eot = eot_id(encoder_text, hp)
    write_weights(out / "model.safetensors", weights, dtype)
    atomic_write_text(out / "vocab.json", encoder_text)
    atomic_write_text(out / "merges.txt", merges_text)
    atomic_write_text(out / HF_TOKENIZER, json.dumps(tokenizer_json(encoder_text, merges_text),
                                                     ensure_ascii=False) + "\n")
    token = ENDOFTEXT if json.loads(encoder_text).get(ENDOFTEXT) == eot else None
    tokenizer_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": hp.n_ctx,
                        "bos_token": token, "eos_token": token, "unk_token": token,
                        "add_prefix_space": False, "add_bos_token": False}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n")
    atomic_write_text(out / "generation_config.json",
                      json.dumps({"bos_token_id": eot, "eos_token_id": eot}, indent=2) + "\n")
    atomic_write_text(out / HF_CONFIG, json.dumps(config_dict(hp, eot, dtype), indent=2) + "\n")
    return ["model.safetensors", "vocab.json", "merges.txt", HF_TOKENIZER, "tokenizer_config.json",
            "generation_config.json", HF_CONFIG]

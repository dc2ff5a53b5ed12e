"""Hugging Face's GPT-2 tokenizer files: read as OpenAI's vocabulary, written exactly as transformers does.

`vocab.json` + `merges.txt` are OpenAI's `encoder.json` + `vocab.bpe` under other names (byte for
byte in the releases); transformers 5 saves `tokenizer.json` alone, which holds the same vocabulary
and merges. `vocab_texts` gives the texts of `encoder.json` and `vocab.bpe` from any of these, after
refusing (one line) a tokenizer that is not GPT-2's byte-level BPE; `tokenizer_json` writes the
`tokenizer.json` that the `tokenizers` library itself writes for them (checked in tests/test_hf.py).
No TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .folders import HF_TOKENIZER, VOCAB_FILES, vocab_paths
from .hparams import HParams
from .tokens import ENDOFTEXT


def check_tokenizer(folder: str | Path) -> None:
    """Refuse, in one line, a Hugging Face tokenizer that is not GPT-2's byte-level BPE."""
    folder = Path(folder)

    def refuse(what: str) -> UserError:
        return UserError(f"{folder}: the tokenizer differs from GPT-2's ({what}); gpt2easy encodes "
                         f"only with GPT-2's byte-level BPE")

    config = read_json_object(folder / "tokenizer_config.json")
    if config is not None:
        cls = str(config.get("tokenizer_class") or "GPT2Tokenizer")
        if cls.removesuffix("Fast") != "GPT2Tokenizer":
            raise refuse(f"tokenizer_class {cls}")
        for key in ("add_prefix_space", "add_bos_token", "do_lower_case"):
            if config.get(key):
                raise refuse(f"{key} is set")
    tok = read_json_object(folder / HF_TOKENIZER)
    if tok is not None:
        model = tok.get("model") or {}
        if model.get("type") != "BPE":
            raise refuse(f"model type {model.get('type')}")
        if tok.get("normalizer"):
            raise refuse("it normalizes the text")
        pre = tok.get("pre_tokenizer") or {}
        if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
            raise refuse(f"pre-tokenizer {json.dumps(pre)[:80]}")
        extra = [t.get("content") for t in tok.get("added_tokens") or [] if t.get("content") != ENDOFTEXT]
        if extra:
            raise refuse(f"added tokens {', '.join(map(str, extra[:3]))}")


def read_json_object(path: Path, missing_ok: bool = True) -> dict | None:
    """The JSON object in `path` (None for a missing file when `missing_ok`); a one-line UserError
    for anything unreadable or not an object. Shared by the config and tokenizer readers."""
    if missing_ok and not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def vocab_texts(folder: str | Path) -> tuple[str, str]:
    """The texts of `encoder.json` and `vocab.bpe` of any model folder: OpenAI's files, HF's
    `vocab.json` + `merges.txt` (the same files), or the vocabulary inside `tokenizer.json`."""
    folder = Path(folder)
    first, second = vocab_paths(folder)
    try:
        if first.name == VOCAB_FILES[0]:
            return first.read_text(encoding="utf-8"), second.read_text(encoding="utf-8")
        check_tokenizer(folder)
        if first.name != HF_TOKENIZER:
            merges = second.read_text(encoding="utf-8")
            if not merges.startswith("#version"):  # OpenAI's vocab.bpe starts with this line
                merges = "#version: 0.2\n" + merges
            return first.read_text(encoding="utf-8"), merges
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the vocabulary of {folder}: {e}") from None
    model = read_json_object(first).get("model") or {}
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise UserError(f"{first}: no BPE vocabulary and merges inside")
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return json.dumps(vocab), "#version: 0.2\n" + "\n".join(lines) + "\n"


def tokenizer_json(encoder_text: str, merges_text: str) -> dict:
    """`tokenizer.json` of GPT-2's tokenizer over this vocabulary, as `tokenizers` writes it."""
    encoder = json.loads(encoder_text)
    merges = [line.split() for line in merges_text.split("\n")[1:] if line.strip()]
    added = [{"id": encoder[ENDOFTEXT], "content": ENDOFTEXT, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}] if ENDOFTEXT in encoder else []
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    sequence = [{"Sequence": {"id": "A", "type_id": 0}}]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": byte_level,
            "post_processor": {"type": "TemplateProcessing", "single": sequence,
                               "pair": [*sequence, {"Sequence": {"id": "B", "type_id": 1}}],
                               "special_tokens": {}},
            "decoder": {**byte_level, "add_prefix_space": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                      "byte_fallback": False, "ignore_merges": False, "vocab": encoder,
                      "merges": merges}}


def eot_id(encoder_text: str, hp: HParams) -> int:
    value = json.loads(encoder_text).get(ENDOFTEXT)
    return int(value) if isinstance(value, int) and value < hp.n_vocab else hp.n_vocab - 1

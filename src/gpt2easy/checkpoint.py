"""Checkpoints in OpenAI's name-based TF format: read strictly, write atomically (finding one: `locate`).

A checkpoint is a TF "V2" bundle (`PREFIX.index` + `PREFIX.data-00000-of-00001`) whose tensors are
named as in OpenAI's releases (`model/h0/attn/c_attn/w`, ...), plus a `checkpoint` state file in the
folder that names the newest one. OpenAI's folders hold `model.ckpt`; training runs hold `model-N`
(N = completed updates). `model-N` holds the weights and nothing else, so every weight reader loads it
as it is (transformers' TF reader choked on anything else). What a resume needs beside the weights
lives in sibling bundles where weight readers never look: `model-N.train` (loop state, `train/...`)
and `model-N.optimizer` (optimizer slots, `optimizer/...`). Old run folders, whose `model-N` holds
those entries itself, still read: the weight reader skips them and `read_tensors` finds them.

A Hugging Face folder's `model.safetensors` also counts as a checkpoint (read through `hf`): its
tensors are renamed to OpenAI's names on the way in.

Writes are atomic: each bundle is written under a temporary prefix and renamed (data first, index
last); the siblings go first and `model-N.index`, renamed last, commits the checkpoint; then the state
file is replaced. A kill at any instant leaves the previous checkpoint loadable; the state file holds
paths relative to its folder, so a run folder can be moved or copied.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import tensorflow as tf

from . import hf
from .errors import UserError
from .files import atomic_write_text, fsync_dir
from .hparams import HParams
from .locate import (
    DATA_SUFFIX,
    SIBLINGS,
    STATE_FILE,
    candidates,
    find_checkpoint,
    is_complete,
    is_hf,
    state_paths,
)
from .model import GPT2, FrozenGPT2, weight_shapes

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Entries a weight reader skips on purpose: our optimizer/loop state, TF1 optimizer slots and counters.
_NOT_WEIGHTS = re.compile(
    r"^(optimizer|train)/|/(Adam|Adam_1|Momentum)(_\d+)?$|^(global_step|beta[12]_power)"
)
SAVE_OPTIMIZER = ("newest", "all", "none")


def _bundle_files(prefix: str | Path) -> list[Path]:
    """The files of a checkpoint and of its siblings, index before data (removal order)."""
    return [Path(f"{p}{s}") for p in (prefix, *(f"{prefix}{x}" for x in SIBLINGS.values()))
            for s in (".index", DATA_SUFFIX, ".meta")]


def _bundles(prefix: str) -> list[str]:
    return [prefix, *(f"{prefix}{s}" for s in SIBLINGS.values() if is_complete(f"{prefix}{s}"))]


def read_tensors(prefix: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Raw tensors of a checkpoint and its siblings by name (all of them when `names` is None)."""
    if is_hf(prefix):
        return hf.read_tensors(prefix, names)
    out: dict[str, np.ndarray] = {}
    for bundle in _bundles(prefix)[1:]:
        have = _list_bundle(bundle)
        out.update(_read_bundle(bundle, [n for n in (have if names is None else names) if n in have]))
    rest = None if names is None else [n for n in names if n not in out]
    if rest is None or rest:
        out.update({k: v for k, v in _read_bundle(prefix, rest).items() if k not in out})
    return out


def _read_bundle(prefix: str, names: list[str] | None) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in _restore_bundle(prefix, names).items()}


def _restore_bundle(prefix: str, names: list[str] | None) -> dict[str, tf.Tensor]:
    """Tensors of one bundle as TensorFlow tensors, in one RestoreV2 op: a model's weights become
    variables without a copy through NumPy (tensor by tensor through NumPy, then a float32 copy,
    then the variables' own: three copies of 500 MB that took 2-3 s of a 124M launch)."""
    try:
        dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
        keys = names if names is not None else list(dtypes)
        if not keys:
            return {}
        values = tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=keys,
                                      shape_and_slices=[""] * len(keys),
                                      dtypes=[dtypes[k] for k in keys])  # fmt: skip
        return dict(zip(keys, values, strict=True))
    except (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError, KeyError) as e:
        message = str(getattr(e, "message", e)).splitlines()[0][:200]
        raise UserError(f"{prefix}: checkpoint is unreadable or corrupt ({message}); "
                        f"restore from an older one or retrain") from None


def list_tensors(prefix: str, siblings: bool = True) -> dict[str, list[int]]:
    """Names and shapes of a checkpoint's tensors (with its siblings' unless `siblings` is False)."""
    if is_hf(prefix):
        return hf.list_tensors(prefix)
    shapes: dict[str, list[int]] = {}
    for bundle in _bundles(prefix)[::-1] if siblings else [prefix]:
        shapes.update(_list_bundle(bundle))
    return shapes


def _list_bundle(prefix: str) -> dict[str, list[int]]:
    try:
        return tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError) as e:
        message = str(getattr(e, "message", e)).splitlines()[0][:200]
        raise UserError(f"{prefix}: checkpoint index is unreadable or corrupt ({message})") from None


def _describe(shapes: dict[str, list[int]]) -> str:
    """A guess at the size of the model a checkpoint holds, for error messages."""
    wte = shapes.get("model/wte")
    n_layer = len({k.split("/")[1] for k in shapes if re.match(r"model/h\d+/", k)})
    return f"n_vocab={wte[0]}, n_embd={wte[1]}, n_layer={n_layer}" if wte else "no model/wte"


def read_weights(prefix: str, hp: HParams) -> dict[str, np.ndarray]:
    """Model weights by OpenAI name as float32 arrays, strictly: every problem is reported in one
    UserError."""
    return {k: np.asarray(v) for k, v in weight_tensors(prefix, hp).items()}


def weight_tensors(prefix: str, hp: HParams) -> dict[str, tf.Tensor | np.ndarray]:
    """`read_weights` without the trip through NumPy for TF bundles: float32 tensors to make
    variables from (a Hugging Face folder's are NumPy arrays already)."""
    shapes = list_tensors(prefix, siblings=False)
    expected = weight_shapes(hp)
    weights = {k: v for k, v in shapes.items() if not _NOT_WEIGHTS.search(k)}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"{k} {list(weights[k])} != {list(s)}" for k, s in expected.items()
             if k in weights and tuple(weights[k]) != tuple(s)]
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("wrong shape", wrong)) if items]
        raise UserError(f"{prefix} does not match hparams.json (n_vocab={hp.n_vocab}, "
                        f"n_embd={hp.n_embd}, n_layer={hp.n_layer}; checkpoint has "
                        f"{_describe(shapes)}): {'; '.join(parts)}")
    names = list(expected)
    if is_hf(prefix):
        return {k: v.astype(np.float32, copy=False) for k, v in hf.read_tensors(prefix, names).items()}
    return {k: tf.cast(v, tf.float32) for k, v in _restore_bundle(prefix, names).items()}


def newest_readable(folder: str | Path, read: Callable[[str], T]) -> T:
    """`read(prefix)` of the newest checkpoint in `folder` that reads back, falling back with a
    warning past damaged ones. A mismatch with hparams.json is not damage: it stops the search."""
    found = candidates(folder)
    if not found:
        find_checkpoint(folder)  # raises the folder's error
    for i, prefix in enumerate(found):
        try:
            return read(prefix)
        except UserError as e:
            if i + 1 == len(found) or "does not match hparams.json" in str(e):
                raise
            logger.warning("warning: skipping %s: %s; falling back to %s", prefix, e, found[i + 1])
    raise AssertionError("unreachable")


def load_weights(path: str | Path, hp: HParams, read: Callable = read_weights) -> tuple[str, dict]:
    """Weights from a folder (newest readable checkpoint, falling back with a warning past corrupt
    ones) or from an explicit prefix (an error if it is corrupt). Returns (prefix, weights);
    `read(prefix, hp)` reads them (`weight_tensors` to make variables from)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        prefix = find_checkpoint(path)
        return prefix, read(prefix, hp)
    return newest_readable(path, lambda prefix: (prefix, read(prefix, hp)))


def load_model(path: str | Path, hp: HParams, frozen: bool = False) -> GPT2 | FrozenGPT2:
    """The model of a folder or prefix (see `load_weights`); `frozen`: for sampling only, its
    weights as the tensors read (`FrozenGPT2`) rather than variables."""
    return (FrozenGPT2 if frozen else GPT2)(hp, load_weights(path, hp, weight_tensors)[1])


def _write_bundle(prefix: Path, tensors: dict, commit: Path | None = None) -> None:
    """Write a V2 bundle under a temporary prefix beside `prefix`, then rename data, then index.
    `commit`: the checkpoint this bundle is a sibling of (named in error messages)."""
    tmp = prefix.parent / f".tmp-{prefix.name}-{uuid.uuid4().hex[:8]}"
    names = list(tensors)
    try:
        values = [tf.convert_to_tensor(tensors[n]) for n in names]
        tf.raw_ops.SaveV2(prefix=str(tmp), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=values)
        for suffix in (DATA_SUFFIX, ".index"):
            with open(f"{tmp}{suffix}", "rb+") as f:
                os.fsync(f.fileno())
            os.replace(f"{tmp}{suffix}", f"{prefix}{suffix}")
    except (tf.errors.OpError, OSError) as e:
        # TF's message starts with its op's name and our temporary path: keep only the reason
        # (e.g. "No space left on device"), which used to be cut off.
        reason = str(getattr(e, "strerror", None) or getattr(e, "message", e))
        reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason).replace(f"{tmp}", "")
        reason = reason.strip(" :;").splitlines()[0][:200] if reason.strip() else type(e).__name__
        raise UserError(f"cannot write checkpoint {commit or prefix}: {reason}; "
                        f"the previous checkpoint is intact") from None
    finally:
        for leftover in prefix.parent.glob(f"{tmp.name}*"):
            leftover.unlink(missing_ok=True)
    fsync_dir(prefix.parent)


def _write_state(folder: Path, names: list[str]) -> None:
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{n}"' for n in names]
    atomic_write_text(folder / STATE_FILE, "\n".join(lines) + "\n")


def write_checkpoint(folder: str | Path, step: int, tensors: dict, max_to_keep: int | None = 5,
                     name: str | None = None, protect: tuple[str, ...] = (),
                     save_optimizer: str = "all") -> str:
    """Save `tensors` as `folder/model-{step}` (or `folder/{name}`), atomically, and make it the
    newest in the state file. Keeps the newest `max_to_keep` (None or 0: keep all), plus the
    checkpoints named in `protect` (the best one of --keep_best) whatever their age.

    Entries under `train/` and `optimizer/` go to the siblings `NAME.train` and `NAME.optimizer`,
    written before `NAME` itself. `save_optimizer="newest"` then removes the optimizer sibling of
    every older checkpoint (they stay loadable and resumable, with the optimizer from zero)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {e.strerror}") from None
    for stale in folder.glob(".tmp-*"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    name = name or f"model-{step}"
    for suffix in SIBLINGS.values():  # siblings of a save that was killed before its commit
        for index in folder.glob(f"*{suffix}.index"):
            owner = str(index)[: -len(f"{suffix}.index")]
            if not is_complete(owner):
                for path in _bundle_files(owner)[3:]:
                    path.unlink(missing_ok=True)
    if is_complete(folder / name):  # overwritten: uncommit it first, so no old/new mix ever loads
        for path in _bundle_files(folder / name):
            path.unlink(missing_ok=True)
    parts: dict[str, dict] = {suffix: {} for suffix in ("", *SIBLINGS.values())}
    for key, value in tensors.items():
        parts[next((s for p, s in SIBLINGS.items() if key.startswith(p)), "")][key] = value
    try:
        for suffix, part in parts.items():
            if suffix and part:
                _write_bundle(folder / f"{name}{suffix}", part, commit=folder / name)
        _write_bundle(folder / name, parts[""])
    except BaseException:  # not committed: its siblings are of no use
        if not is_complete(folder / name):
            for path in _bundle_files(folder / name)[3:]:
                path.unlink(missing_ok=True)
        raise
    kept = [Path(p).name for p in state_paths(folder)[::-1] if Path(p).name != name and is_complete(p)]
    kept.append(name)
    dropped = [n for n in kept[: -max_to_keep] if n not in protect] if max_to_keep else []
    kept = [n for n in kept if n not in dropped]
    _write_state(folder, kept)
    for old in dropped:  # only after the state file no longer names them
        for path in _bundle_files(folder / old):
            path.unlink(missing_ok=True)
    if save_optimizer == "newest":
        for old in kept[:-1]:
            for path in _bundle_files(folder / f"{old}{SIBLINGS['optimizer/']}")[:3]:
                path.unlink(missing_ok=True)
    return str(folder / name)


def write_openai_checkpoint(folder: str | Path, weights: dict) -> str:
    """Write weights in exactly OpenAI's layout: `checkpoint`, `model.ckpt.{index,data-*}`."""
    return write_checkpoint(folder, 0, weights, max_to_keep=1, name="model.ckpt")

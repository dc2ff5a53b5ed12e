"""GPT-2 hyperparameters: one frozen dataclass, read from and written to `hparams.json`."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from .errors import UserError
from .files import atomic_write_text

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HParams:
    """The shape of a GPT-2 model, with OpenAI's field names (124M defaults)."""

    n_vocab: int = 50257
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"hparams: {field.name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise UserError(
                f"hparams: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def n_params(self) -> int:
        """Number of weights, counting the tied embedding once (124M: 124,439,808)."""
        e, layer = self.n_embd, 12 * self.n_embd**2 + 13 * self.n_embd
        return (self.n_vocab + self.n_ctx) * e + self.n_layer * layer + 2 * e

    @classmethod
    def from_dict(cls, data: dict, source: str = "hparams") -> HParams:
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object with n_vocab, n_ctx, n_embd, ...")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - data.keys())
        if missing:
            raise UserError(f"{source}: missing {', '.join(missing)}")
        unknown = sorted(data.keys() - names)
        if unknown:
            logger.warning("%s: ignoring unknown keys %s", source, ", ".join(unknown))
        try:
            return cls(**{k: data[k] for k in names})
        except UserError as e:
            raise UserError(f"{source}: {str(e).removeprefix('hparams: ')}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> HParams:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: not found (every model folder needs hparams.json)") from None
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable JSON file ({e})") from None
        return cls.from_dict(data, source=str(path))

    def to_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

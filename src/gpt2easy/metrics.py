"""`metrics.jsonl` in a run folder: one JSON object per line, the training curves as plain data.

    {"step": 10, "loss": 3.21, "avg": 3.40, "lr": 2e-05, "tokens_per_sec": 1520.3, "time": 1764...}
    {"step": 10, "val_loss": 3.35, "time": 1764...}

A line per logged step (loss, moving average, learning rate, tokens/s), and a line with `val_loss`
whenever validation runs. `pandas.read_json(path, lines=True)` loads it. Each line is appended with
one `os.write` on a file opened with O_APPEND, so a line is never interleaved or half-rewritten; a
line cut short by a crash is skipped by `read_metrics` and dropped on the next resume. The file is
fsynced with every checkpoint. On resume from step N, lines with step > N are dropped first (with an
atomic rewrite), so the file continues exactly where the checkpoint does.

This module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

from .errors import UserError
from .files import atomic_write_text

logger = logging.getLogger(__name__)

FILENAME = "metrics.jsonl"


def _parse(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete line of a metrics file (a torn or foreign line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the last line is incomplete
    return [row for row in map(_parse, lines) if row is not None]


def thin(rows: list[dict], most: int) -> list[dict]:
    """At most about `most` rows for plotting: every validation row, and evenly spaced others."""
    plain = [r for r in rows if "val_loss" not in r]
    if len(plain) <= most:
        return rows
    keep = {id(r) for r in plain[:: math.ceil(len(plain) / most)]} | {id(plain[-1])}
    return [r for r in rows if "val_loss" in r or id(r) in keep]


class MetricsLog:
    """Appends metric lines to `folder/metrics.jsonl`, continuing from checkpoint step `resume_step`."""

    def __init__(self, folder: str | Path, resume_step: int):
        self.path = Path(folder) / FILENAME
        self.fd = -1
        try:
            if self.path.exists():
                text = self.path.read_text(encoding="utf-8", errors="replace")
                kept = [line for line in text.split("\n")[: -1 if not text.endswith("\n") else None]
                        if (row := _parse(line)) is not None and row["step"] <= resume_step]  # fmt: skip
                body = "".join(line + "\n" for line in kept)
                if body != text:
                    atomic_write_text(self.path, body)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except (OSError, UserError) as e:
            self._give_up(e)

    def _give_up(self, error: Exception) -> None:
        """Metrics are a convenience: a full disk or a read-only folder must not stop training (the
        checkpoint save reports such problems itself)."""
        logger.warning("warning: cannot write %s (%s); training goes on without it", self.path,
                       getattr(error, "strerror", None) or error)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = -1

    def write(self, step: int, **values) -> None:
        """One line: {"step": step, **values, "time": now} (non-finite numbers as null)."""
        import time

        row = {"step": int(step)}
        for k, v in values.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else None
        row["time"] = round(time.time(), 3)
        if self.fd >= 0:
            try:
                os.write(self.fd, (json.dumps(row) + "\n").encode())
            except OSError as e:
                self._give_up(e)

    def sync(self) -> None:
        """Make the lines written so far durable (called with every checkpoint)."""
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError as e:
                self._give_up(e)

    def close(self) -> None:
        self.sync()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

"""Fetch OpenAI's released GPT-2 checkpoints (the seven files of `models/NAME`) over plain HTTP.

Standard library only (urllib), no TensorFlow. Each file is streamed into `FILE.part` beside its
target and renamed onto the final name only once complete, so an interrupted download never leaves a
truncated `model.ckpt.*` that a later load would trip over. A second run skips files whose size
equals the server's Content-Length and resumes `.part` files with an HTTP Range request (restarting
the file cleanly when the server ignores Range). Transient failures (timeouts, dropped connections,
HTTP 5xx) are retried a bounded number of times; everything else becomes a one-line `UserError`.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .files import fsync_dir
from .folders import DEFAULT_MODELS_DIR, MODEL_ALIASES, resolve_models_dir

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
KNOWN_MODELS = ("124M", "355M", "774M", "1558M")
MODEL_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass
class DownloadResult:
    """What a download run did: the folder, which files it fetched or skipped, bytes written."""

    folder: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_written: int = 0

    def summary(self) -> str:
        return (
            f"{self.folder.name}: {len(self.downloaded)} files downloaded, {len(self.skipped)} skipped "
            f"(already complete), {self.bytes_written / 1e6:.1f} MB written to {self.folder}"
        )


class NetworkError(UserError):
    """The server could not be reached or refused the file (another source may still work)."""


class _Transient(Exception):
    """A failure worth retrying (timeout, dropped connection, short body, HTTP 5xx)."""


def resolve_model_name(model_name: str, custom_server: bool = False) -> str:
    """The current name of `model_name` (old names 117M/345M map to 124M/355M), checked.

    On OpenAI's server only the released sizes are accepted; with a custom `--base_url` any name
    that is a plain folder name is allowed (a mirror may host other models).
    """
    name = str(model_name)
    name = MODEL_ALIASES.get(name, name)
    known = ", ".join(KNOWN_MODELS) + " (old names: " + ", ".join(MODEL_ALIASES) + ")"
    if not _SAFE_NAME.fullmatch(name):
        raise UserError(f"bad model name {model_name!r}: use one of {known}")
    if not custom_server and name not in KNOWN_MODELS:
        raise UserError(
            f"unknown model {model_name!r}: use one of {known}, "
            f"or pass --base_url to fetch it from another server"
        )
    return name


def download_model(
    model_name: str,
    models_dir: str | Path | None = DEFAULT_MODELS_DIR,
    base_url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> DownloadResult:
    """Download the seven files of GPT-2 `model_name` into `models_dir/NAME`.

    Args:
        model_name: 124M, 355M, 774M or 1558M (117M and 345M are accepted as old names).
        models_dir: parent folder of the model folders (None: `folders.resolve_models_dir`).
        base_url: server folder holding `NAME/FILE`; None means OpenAI's public storage.
        timeout: seconds to wait for a connection or for data before giving up on a request.
        retries: how many times a transient failure of one file is retried before giving up.
        backoff: seconds before the first retry (doubled each time, at most 10x).
        progress: show a tqdm bar per file on stderr.

    Returns:
        What was downloaded and skipped, and how many bytes were written.
    """
    name = resolve_model_name(model_name, custom_server=base_url is not None)
    if name != str(model_name):
        logger.info("%s is the old name of %s; saving it as %s", model_name, name, name)
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    if not base.lower().startswith(("http://", "https://")):
        raise UserError(f"bad --base_url {base_url!r}: it must start with http:// or https://")
    if timeout <= 0 or retries < 0:
        raise UserError("--timeout must be > 0 and --retries >= 0")
    folder = resolve_models_dir(models_dir) / name
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(folder, e) from None
    result = DownloadResult(folder)
    try:
        for filename in MODEL_FILES:
            url = f"{base}/{name}/{filename}"
            fetcher = _FileFetch(url, folder / filename, timeout, progress)
            _with_retries(fetcher.run, url, name, retries, backoff)
            if fetcher.skipped:
                result.skipped.append(filename)
            else:
                result.downloaded.append(filename)
            result.bytes_written += fetcher.written
    except BaseException:
        remove_empty(made)
        raise
    return result


def remove_empty(made: list[Path]) -> None:
    """Remove the folders a failed download made and left empty, innermost first (partial files
    are kept, for resuming)."""
    for path in made:
        try:
            path.rmdir()
        except OSError:
            break


class _FileFetch:
    """One file: skip it if complete, else fill `FILE.part` (resuming) and rename it into place."""

    def __init__(self, url: str, target: Path, timeout: float, progress: bool,
                 headers: dict[str, str] | None = None, verify=None):
        self.url, self.target, self.timeout, self.progress = url, target, timeout, progress
        self.part = target.with_name(target.name + ".part")
        self.headers = headers or {}  # e.g. the hub's Authorization
        self.verify = verify  # called with the complete `.part` before the rename (checksums)
        self.skipped = False
        self.written = 0

    def run(self) -> None:
        size = self._remote_size()
        if self.target.is_file() and (size is None or self.target.stat().st_size == size):
            logger.debug("%s: complete, skipped", self.target)
            self.skipped = True
            return
        have = self.part.stat().st_size if self.part.is_file() else 0
        if size is not None and have > size:
            have = 0  # not a prefix of this file: start over
        if size is None or have < size or not self.part.is_file():  # an empty file needs a .part too
            size = self._fetch_into_part(have, size)
        if size is not None and self.part.stat().st_size != size:
            raise _Transient(f"got {self.part.stat().st_size} of {size} bytes")
        if self.verify is not None:
            self.verify(self.part)
        _finish(self.part, self.target)

    def _open(self, method: str = "GET", start: int = 0, end: int | None = None):
        request = urllib.request.Request(self.url, method=method, headers=self.headers)
        if start or end is not None:
            request.add_header("Range", f"bytes={start}-{'' if end is None else end}")
        return urllib.request.urlopen(request, timeout=self.timeout)

    def _remote_size(self) -> int | None:
        """The file's size on the server: HEAD's Content-Length, else a one-byte ranged GET."""
        try:
            with self._open("HEAD") as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit():
                    return int(length)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code not in (403, 405, 501):  # servers that refuse HEAD but may serve GET
                raise
        with self._open("GET", 0, 0) as response:
            if response.status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
                if match and match.group(3) != "*":
                    return int(match.group(3))
            length = response.headers.get("Content-Length")
            return int(length) if response.status == 200 and length and length.isdigit() else None

    def _fetch_into_part(self, have: int, size: int | None) -> int | None:
        """Append the rest of the file to `.part` (or rewrite it); return the full size if known."""
        try:
            response = self._open("GET", have)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code != 416 or not have:
                raise
            self.part.unlink()  # our `.part` doesn't fit the server's file: start over
            return self._fetch_into_part(0, size)
        with response:
            start = 0
            if response.status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
                if not match or int(match.group(1)) != have:
                    if not have:
                        raise _Transient("the server answered a request for the file with a range")
                    self.part.unlink(missing_ok=True)  # not the range we asked for: start over
                    return self._fetch_into_part(0, size)
                start = have
                if match.group(3) != "*":
                    size = int(match.group(3))
            else:  # 200: the whole file, Range ignored
                length = response.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else None
            self._stream(response, start, size)
        return size

    def _stream(self, response, start: int, size: int | None) -> None:
        """Copy the response body into `.part` from byte `start` on, with a progress bar."""
        from tqdm.auto import tqdm

        try:
            f = open(self.part, "r+b" if start else "wb")
        except OSError as e:
            raise _cannot_write(self.part, e) from None
        bar = tqdm(
            total=size,
            initial=start,
            desc=self.target.name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not self.progress,
        )
        with f, bar:
            try:
                f.seek(start)
                f.truncate()
            except OSError as e:
                raise _cannot_write(self.part, e) from None
            while chunk := response.read(CHUNK):  # network errors go up to the retry loop
                try:
                    f.write(chunk)
                except OSError as e:
                    raise _cannot_write(self.part, e) from None
                self.written += len(chunk)
                bar.update(len(chunk))
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise _cannot_write(self.part, e) from None


def _cannot_write(path: Path, e: OSError) -> UserError:
    return UserError(f"cannot write {path}: {e.strerror or e}")


def _finish(part: Path, target: Path) -> None:
    try:
        os.replace(part, target)
    except OSError as e:
        raise _cannot_write(target, e) from None
    fsync_dir(target.parent)


def _with_retries(fn, url: str, name: str, retries: int, backoff: float,
                  where: str = "--base_url") -> None:
    """Run `fn`, retrying transient network failures; turn the rest into one-line UserErrors.
    `where`: what the user can change to fetch from elsewhere (named in the messages)."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except UserError:
            raise
        except Exception as e:  # classified below; bugs are re-raised untouched
            transient, reason = _classify(e)
            if reason is None:
                raise
            if isinstance(e, urllib.error.HTTPError) and not transient:
                hint = (
                    f"is {name!r} on that server? check the model name and {where}"
                    if e.code == 404
                    else f"check {where}"
                )
                raise NetworkError(f"{url}: {reason}; {hint}") from None
            if not transient or attempt == retries:
                tries = f" (after {attempt + 1} tries)" if attempt else ""
                raise NetworkError(
                    f"cannot reach {url}: {reason}{tries}; check your connection or use {where}"
                ) from None
            delay = backoff * min(2**attempt, 10)
            logger.warning("%s: %s; retrying in %.0f s (%d/%d)", url, reason, delay, attempt + 1, retries)
            time.sleep(delay)


def _classify(e: BaseException) -> tuple[bool, str | None]:
    """(is it worth retrying, a short reason) for a network error; reason None for other errors."""
    if isinstance(e, _Transient):
        return True, str(e)
    if isinstance(e, urllib.error.HTTPError):
        return e.code >= 500 or e.code in (408, 429), f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else OSError(str(e.reason))
    if isinstance(e, (TimeoutError, socket.timeout)):
        return True, "timed out"
    if isinstance(e, (ConnectionRefusedError, socket.gaierror)):
        return False, e.strerror or str(e)  # nothing listening / no such host: retrying won't help
    if isinstance(e, (ConnectionError, http.client.HTTPException)):
        return True, str(e) or type(e).__name__
    if isinstance(e, OSError):  # TLS failures, unreachable networks, ...
        return False, e.strerror or str(e)
    return False, None

"""The Hugging Face hub as a second download source (standard library only, no TensorFlow).

A repository's files are at `{HF_ENDPOINT}/{ORG/NAME}/resolve/main/{FILE}`. The hub answers a HEAD
there with the file's metadata: for large (LFS) files a redirect to its storage with the file's
sha256 in `X-Linked-Etag` and its size in `X-Linked-Size`. We follow the redirects by hand, so that
the token (`HF_TOKEN`) goes to the hub and never to another host, then download the bytes exactly
like OpenAI's files (download.py: `.part` file, resume with Range, retries, rename when complete)
and check each LFS file's sha256 before the rename. The folder we write is a Hugging Face folder
(config.json, model.safetensors, tokenizer files), which loads wherever a model folder does (hf.py).

`fetch_model` picks the source: OpenAI's storage, the hub, or (`auto`) OpenAI's then the hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import download
from .errors import UserError
from .folders import DEFAULT_MODELS_DIR, HF_CONFIG, HF_WEIGHTS, MODEL_ALIASES
from .hf import hparams_from_config

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
SOURCES = ("auto", "openai", "hf")
HUB_REPOS = {"124M": "openai-community/gpt2", "355M": "openai-community/gpt2-medium",
             "774M": "openai-community/gpt2-large", "1558M": "openai-community/gpt2-xl"}
REQUIRED = (HF_CONFIG, HF_WEIGHTS)
OPTIONAL = ("generation_config.json", "tokenizer_config.json", "vocab.json", "merges.txt",
            "tokenizer.json")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_WHERE = "HF_ENDPOINT and --repo (and HF_TOKEN for a private or gated repository)"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # answered as an HTTPError: we follow it ourselves


def _resolve(url: str, headers: dict, timeout: float) -> tuple[str, dict, dict]:
    """(URL of the bytes, headers to send there, the hub's metadata) of a `resolve` URL."""
    opener = urllib.request.build_opener(_NoRedirect)
    host = urllib.parse.urlsplit(url).netloc
    meta: dict[str, str] = {}
    for _ in range(10):
        try:
            response = opener.open(urllib.request.Request(url, method="HEAD", headers=headers),
                                   timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code not in (301, 302, 303, 307, 308):
                raise
            response = e
        with response:
            for key in ("X-Linked-Etag", "X-Linked-Size", "ETag", "Content-Length", "X-Repo-Commit"):
                if response.headers.get(key) and key not in meta:
                    meta[key] = response.headers[key]
            location = response.headers.get("Location") if response.status in range(300, 400) else None
        if location is None:
            return url, headers, meta
        url = urllib.parse.urljoin(url, location)
        if urllib.parse.urlsplit(url).netloc != host:
            headers = {}  # the storage is another host: it gets no token
    raise download._Transient("too many redirects")


def _sha256_check(name: str, want: str):
    def verify(part: Path) -> None:
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            while chunk := f.read(download.CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != want:
            part.unlink(missing_ok=True)  # start over: the bytes are wrong, not short
            raise download._Transient(f"{name}: sha256 {digest.hexdigest()[:16]}... differs from "
                                      f"the hub's {want[:16]}...")
    return verify


def download_repo(repo: str, folder: str | Path, *, timeout: float = 30.0, retries: int = 3,
                  backoff: float = 1.0, progress: bool = True) -> download.DownloadResult:
    """Download a GPT-2 repository of the hub into `folder` (a Hugging Face folder)."""
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise UserError(f"bad --repo {repo!r}: give ORG/NAME, e.g. distilbert/distilgpt2")
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    if not endpoint.lower().startswith(("http://", "https://")):
        raise UserError(f"bad HF_ENDPOINT {endpoint!r}: it must start with http:// or https://")
    token = os.environ.get("HF_TOKEN")
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    folder = Path(folder).expanduser()
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise download._cannot_write(folder, e) from None
    result = download.DownloadResult(folder)
    try:
        for filename in (*REQUIRED, *OPTIONAL):
            url = f"{endpoint}/{repo}/resolve/main/{filename}"
            if not _fetch_one(url, filename, folder, auth, result, timeout, retries, backoff,
                              progress, required=filename in REQUIRED, repo=repo):
                continue
            if filename == HF_CONFIG:  # refuse another architecture before the big download
                hparams_from_config(folder / HF_CONFIG)
        if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
                or (folder / "tokenizer.json").is_file()):
            raise UserError(f"{repo}: no GPT-2 tokenizer files on the hub (vocab.json + merges.txt "
                            f"or tokenizer.json)")
    except BaseException:
        download.remove_empty(made)
        raise
    return result


def _fetch_one(url, filename, folder, auth, result, timeout, retries, backoff, progress, *,
               required: bool, repo: str) -> bool:
    """One file of the repository; False when an optional file is not there."""
    found: dict = {}

    def resolve() -> None:
        try:
            found["where"] = _resolve(url, auth, timeout)
        except urllib.error.HTTPError as e:
            e.close()
            code = e.headers.get("X-Error-Code", "")
            if code == "RepositoryNotFound" or (e.code in (401, 403) and not required):
                raise UserError(f"{repo}: repository not found on {url.split('/' + repo)[0]}, or "
                                f"private or gated (set HF_TOKEN to a token with access)") from None
            if e.code == 404 and filename == HF_WEIGHTS:
                raise UserError(f"{repo}: no {HF_WEIGHTS} in the repository (only PyTorch "
                                f"weights?); gpt2easy reads safetensors only") from None
            if e.code != 404 or required:
                raise
            found["where"] = None

    download._with_retries(resolve, url, repo, retries, backoff, where=_WHERE)
    if found["where"] is None:
        logger.debug("%s: not in %s, skipped", filename, repo)
        return False
    target_url, headers, meta = found["where"]
    sha = meta.get("X-Linked-Etag", "").removeprefix("W/").strip('"')
    verify = _sha256_check(filename, sha) if re.fullmatch(r"[0-9a-f]{64}", sha) else None
    if filename == HF_WEIGHTS and verify is None:
        logger.warning("warning: the hub gave no sha256 for %s: not checked", filename)
    fetcher = download._FileFetch(target_url, folder / filename, timeout, progress, headers, verify)
    download._with_retries(fetcher.run, url, repo, retries, backoff, where=_WHERE)
    (result.skipped if fetcher.skipped else result.downloaded).append(filename)
    result.bytes_written += fetcher.written
    return True


def fetch_model(model_name: str | None = None, models_dir: str | Path = DEFAULT_MODELS_DIR, *,
                source: str = "auto", repo: str | None = None, base_url: str | None = None,
                timeout: float = 30.0, retries: int = 3, backoff: float = 1.0,
                progress: bool = True) -> download.DownloadResult:
    """Download a model into `models_dir/NAME` from OpenAI's storage, the hub, or (`auto`) OpenAI's
    storage first and the hub when that fails (with `base_url`, a mirror, `auto` uses the mirror
    alone). `repo` (ORG/NAME) takes any GPT-2 repository of the hub; NAME defaults to its last
    part."""
    if source not in SOURCES:
        raise UserError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    if repo is None and model_name is None:
        raise UserError("give a model name (124M, 355M, 774M, 1558M) or --repo ORG/NAME")
    name = str(model_name) if model_name is not None else str(repo).rsplit("/", 1)[-1]
    name = MODEL_ALIASES.get(name, name)
    if repo is not None and source == "openai":
        raise UserError("--repo names a repository of the Hugging Face hub: use --source hf or auto")
    user_repo = repo
    if repo is None and (source == "hf" or source == "auto" and base_url is None):
        # (with --base_url, a mirror of OpenAI's storage, `auto` means that mirror alone)
        repo = HUB_REPOS.get(name)
        if repo is None:
            raise UserError(f"unknown model {model_name!r}: use one of {', '.join(HUB_REPOS)}, or "
                            f"--repo ORG/NAME for another GPT-2 repository of the hub")
    download.resolve_model_name(name, custom_server=True)  # a plain folder name
    kwargs = {"timeout": timeout, "retries": retries, "backoff": backoff, "progress": progress}
    if source == "openai" or (source == "auto" and user_repo is None):
        try:
            return download.download_model(name, models_dir, base_url=base_url, **kwargs)
        except download.NetworkError as e:  # not for bad flags or a full disk
            if source == "openai" or repo is None:
                raise
            logger.warning("warning: OpenAI's storage failed (%s); trying the hub's %s", e, repo)
    return download_repo(str(repo), Path(models_dir).expanduser() / name, **kwargs)

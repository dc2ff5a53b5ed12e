"""download_model from the Hugging Face hub: against a fake hub on 127.0.0.1 (never the real one).

The fake hub answers `/{ORG/NAME}/resolve/main/{FILE}` as the hub does: small files directly (ETag,
Content-Length), large (LFS) files with a 302 to a storage host carrying `X-Linked-Etag` (the
sha256) and `X-Linked-Size`; a renamed repository answers with a relative 307. The storage is the
same server under another host name (`localhost` vs `127.0.0.1`), so we can see whether the token
leaks there. It can drop the connection halfway through, or serve wrong bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from gpt2easy import checkpoint as ck
from gpt2easy import download, hub, locate
from gpt2easy.errors import UserError
from gpt2easy.hf import hparams_from_config
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights

HP = HParams(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1)


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.renamed = {"old-org/gpt2": "openai-community/gpt2"}
        self.die_gets = 0  # GETs of a stored (LFS) file that send half the body and hang up
        self.corrupt = False  # storage serves wrong bytes
        self.token: str | None = None  # required when set
        self.requests: list[tuple[str, str, str, str | None]] = []  # method, host, path, auth
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def lfs(self, data: bytes) -> bool:
        return len(data) > 10_000

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        fake: FakeHub = self.server.fake  # type: ignore[attr-defined]
        host = self.headers.get("Host", "").split(":")[0]
        auth = self.headers.get("Authorization")
        fake.requests.append((self.command, host, self.path, auth))
        if self.path.startswith("/storage/"):
            return self._storage(fake, body)
        parts = self.path.lstrip("/").split("/", 4)
        if len(parts) != 5 or parts[2:4] != ["resolve", "main"]:
            return self._reply(404, {"X-Error-Code": "EntryNotFound"})
        repo, filename = "/".join(parts[:2]), parts[4]
        if repo in fake.renamed:
            new = f"/{fake.renamed[repo]}/resolve/main/{filename}"
            return self._reply(307, {"Location": new})
        if fake.token and auth != f"Bearer {fake.token}" or repo not in fake.repos:
            return self._reply(401, {"X-Error-Code": "RepositoryNotFound"})
        data = fake.repos[repo].get(filename)
        if data is None:
            return self._reply(404, {"X-Error-Code": "EntryNotFound"})
        if fake.lfs(data):
            sha = hashlib.sha256(data).hexdigest()
            return self._reply(302, {"Location": f"http://localhost:{fake.port}/storage/{repo}/{filename}",
                                     "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                                     "ETag": '"gitsha"'})
        self._reply(200, {"ETag": '"blobsha"'}, data, body)

    def _storage(self, fake: FakeHub, body: bool):
        _, _, org, name, filename = self.path.split("/", 4)
        data = fake.repos[f"{org}/{name}"][filename]
        if fake.corrupt:
            data = bytes(b ^ 1 for b in data[:10]) + data[10:]
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        chunk = data[start:]
        if body and fake.die_gets > 0:
            fake.die_gets -= 1
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(chunk)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        self._reply(206 if start else 200, headers, chunk, body)

    def _reply(self, code: int, headers: dict, data: bytes = b"", body: bool = True):
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory, vocab_dir) -> dict[str, bytes]:
    """The files of a GPT-2 repository, as our export writes them (checked against transformers
    in test_hf.py)."""
    from gpt2easy import hf

    out = tmp_path_factory.mktemp("repo") / "gpt2"
    vocab = ((vocab_dir / "encoder.json").read_text("utf-8"), (vocab_dir / "vocab.bpe").read_text("utf-8"))
    weights = {k: v + np.float32(0.5) for k, v in initial_weights(HP, seed=1).items()}
    hf.write_folder(out, HP, weights, vocab)
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.fixture
def fake(repo_files, monkeypatch):
    server = FakeHub({"openai-community/gpt2": repo_files, "distilbert/distilgpt2": repo_files})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    yield server
    server.close()


def fetch(tmp_path: Path, *args, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("timeout", 5)
    return hub.fetch_model(*args, models_dir=tmp_path / "models", **kwargs)


def assert_model(folder: Path, repo_files: dict[str, bytes]):
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == repo_files
    hp, _, prefix = locate.open_model(str(folder.parent), folder.name)
    assert hp == HP and prefix == str(folder / "model.safetensors")
    weights = ck.load_weights(prefix, hp)[1]
    np.testing.assert_allclose(weights["model/wte"], initial_weights(HP, seed=1)["model/wte"] + 0.5)


def test_hub_download_follows_redirects_checks_sha256_and_keeps_the_token_home(tmp_path, fake,
                                                                               repo_files,
                                                                               monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret")
    fake.token = "secret"
    result = fetch(tmp_path, "124M", source="hf")
    assert_model(tmp_path / "models" / "124M", repo_files)
    assert sorted(result.downloaded) == sorted(repo_files)
    hub_requests = [r for r in fake.requests if r[1] == "127.0.0.1"]
    storage = [r for r in fake.requests if r[1] == "localhost"]
    assert storage and all(r[3] is None for r in storage)  # the storage never sees the token
    assert all(r[3] == "Bearer secret" for r in hub_requests)
    # Again: every file is complete, nothing is fetched.
    gets = len([r for r in fake.requests if r[0] == "GET"])
    assert fetch(tmp_path, "124M", source="hf").skipped == result.downloaded
    assert len([r for r in fake.requests if r[0] == "GET"]) == gets


def test_any_repo_and_a_renamed_one(tmp_path, fake, repo_files):
    fetch(tmp_path, repo="distilbert/distilgpt2")
    assert_model(tmp_path / "models" / "distilgpt2", repo_files)
    fetch(tmp_path, "old", repo="old-org/gpt2")  # 307 to openai-community/gpt2
    assert_model(tmp_path / "models" / "old", repo_files)


def test_dropped_connection_is_resumed(tmp_path, fake, repo_files):
    fake.die_gets = 2
    fetch(tmp_path, "124M", source="hf")
    assert_model(tmp_path / "models" / "124M", repo_files)
    gets = [r for r in fake.requests if r[0] == "GET" and r[2].endswith("model.safetensors")]
    assert len(gets) == 3  # half, then half of the rest (resumed with Range), then the rest


def test_wrong_bytes_fail_the_sha256_check_and_leave_no_file(tmp_path, fake):
    fake.corrupt = True
    with pytest.raises(UserError, match="sha256") as e:
        fetch(tmp_path, "124M", source="hf", retries=1)
    assert "\n" not in str(e.value)
    folder = tmp_path / "models" / "124M"
    assert not (folder / "model.safetensors").exists()
    assert not (folder / "model.safetensors.part").exists()


def test_auto_falls_back_to_the_hub_when_openai_is_unreachable(tmp_path, fake, repo_files,
                                                               monkeypatch, caplog):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setattr(download, "DEFAULT_BASE_URL", f"http://127.0.0.1:{port}/gpt-2/models")
    fetch(tmp_path, "124M")
    assert "trying the hub's openai-community/gpt2" in caplog.text
    assert hparams_from_config(tmp_path / "models" / "124M" / "config.json") == HP
    assert locate.open_model(str(tmp_path / "models"), "124M")[2].endswith("model.safetensors")


@pytest.mark.parametrize("case", ["unreachable", "no such repo", "private", "no safetensors",
                                  "other architecture"])
def test_hub_errors_are_one_line_and_leave_no_folder(tmp_path, fake, monkeypatch, case):
    repo = "distilbert/distilgpt2"
    if case == "unreachable":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        s.close()
    elif case == "no such repo":
        repo = "nobody/nothing"
    elif case == "private":
        fake.token = "secret"
    elif case == "no safetensors":
        files = dict(fake.repos[repo])
        files["pytorch_model.bin"] = files.pop("model.safetensors")
        fake.repos[repo] = files
    else:
        files = dict(fake.repos[repo])
        config = json.loads(files["config.json"])
        files["config.json"] = json.dumps({**config, "model_type": "llama"}).encode()
        fake.repos[repo] = files
    expected = {"unreachable": "cannot reach", "no such repo": "not found", "private": "HF_TOKEN",
                "no safetensors": "no model.safetensors", "other architecture": "not GPT-2"}[case]
    with pytest.raises(UserError, match=expected) as e:
        fetch(tmp_path, repo=repo)
    assert "\n" not in str(e.value)
    folder = tmp_path / "models" / "distilgpt2"
    assert not (folder / "model.safetensors").exists()
    if case in ("unreachable", "no such repo", "private"):
        assert not (tmp_path / "models").exists()


def test_source_and_name_checks(tmp_path, fake):
    with pytest.raises(UserError, match="unknown model '999M'"):
        fetch(tmp_path, "999M", source="hf")
    with pytest.raises(UserError, match="--source must be one of"):
        fetch(tmp_path, "124M", source="s3")
    with pytest.raises(UserError, match="use --source hf"):
        fetch(tmp_path, repo="distilbert/distilgpt2", source="openai")
    with pytest.raises(UserError, match="bad --repo"):
        fetch(tmp_path, repo="../etc")
    shutil.rmtree(tmp_path / "models", ignore_errors=True)


def test_auto_falls_back_on_network_failures_only(tmp_path, fake):
    with pytest.raises(UserError, match="--retries"):
        fetch(tmp_path, "124M", retries=-1)
    assert fake.requests == []  # a bad flag is not a reason to try the hub

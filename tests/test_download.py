"""download_model: against a fake model server on 127.0.0.1 (never the real one).

The fake server honours `Range: bytes=N-` (206 + Content-Range) unless told to ignore it, counts the
requests it gets, and can drop the connection halfway through the big file, answer slowly, or refuse
HEAD, to exercise skip / resume / restart / retry / error paths.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpt2easy import download
from gpt2easy.download import MODEL_FILES, download_model
from gpt2easy.errors import UserError

BIG = "model.ckpt.data-00000-of-00001"


def fake_files(seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {name: rng.randbytes(rng.randrange(200, 5000)) for name in MODEL_FILES}
    files[BIG] = rng.randbytes(2_500_003)  # several 1 MiB chunks, odd size
    return files


class FakeServer:
    """A threaded HTTP server holding `models[NAME][FILE] = bytes`, with switchable misbehaviour."""

    def __init__(self, models: dict[str, dict[str, bytes]]):
        self.models = models
        self.ignore_range = False
        self.no_head = False
        self.delay = 0.0
        self.die_gets = 0  # this many GETs of the big file send half the body and hang up
        self.fail_5xx: list[int] = []  # the next requests answer these status codes (500, 503, ...)
        self.requests: list[tuple[str, str, str | None]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def gets(self, name: str | None = None) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and (name is None or r[1].endswith(name))]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        fake.requests.append((self.command, self.path, self.headers.get("Range")))
        if fake.delay:
            time.sleep(fake.delay)
        if fake.fail_5xx:
            self.send_error(fake.fail_5xx.pop(0))
            return
        if not body and fake.no_head:
            self.send_error(501)
            return
        model, _, name = self.path.lstrip("/").partition("/")
        data = fake.models.get(model, {}).get(name)
        if data is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match and not fake.ignore_range:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            payload = data[start : end + 1]
        else:
            self.send_response(200)
            payload = data
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not body:
            return
        if name == BIG and fake.die_gets > 0:
            fake.die_gets -= 1
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True  # HTTP/1.0: the socket closes after this returns
            return
        self.wfile.write(payload)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def files() -> dict[str, bytes]:
    return fake_files()


@pytest.fixture
def server(files):
    fake = FakeServer({"124M": files})
    yield fake
    fake.close()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record retry back-off sleeps instead of sleeping."""
    slept: list[float] = []
    monkeypatch.setattr(download, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fetch(tmp_path, server_or_url, name="124M", **kw):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    kw.setdefault("progress", False)
    kw.setdefault("backoff", 0.0)
    return download_model(name, models_dir=tmp_path, base_url=url, **kw)


def assert_identical(folder, files):
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # no .part left behind
    for name, data in files.items():
        assert (folder / name).read_bytes() == data, name


def test_full_download_is_byte_identical(tmp_path, server, files):
    result = fetch(tmp_path, server)
    assert_identical(tmp_path / "124M", files)
    assert result.folder == tmp_path / "124M"
    assert sorted(result.downloaded) == sorted(MODEL_FILES) and result.skipped == []
    assert result.bytes_written == sum(len(d) for d in files.values())
    assert result.summary().startswith("124M: 7 files downloaded, 0 skipped")


def test_an_empty_file_on_the_server_downloads_as_an_empty_file(tmp_path, files):
    empty = FakeServer({"124M": {**files, "model.ckpt.meta": b""}})
    try:
        fetch(tmp_path, empty)
        assert (tmp_path / "124M" / "model.ckpt.meta").read_bytes() == b""
        assert not list((tmp_path / "124M").glob("*.part"))
        fetch(tmp_path, empty)  # and a second run finds it complete
    finally:
        empty.close()


def test_rerun_skips_complete_files_without_fetching_bodies(tmp_path, server, files):
    fetch(tmp_path, server)
    server.requests.clear()
    result = fetch(tmp_path, server)
    assert server.gets() == []
    assert [r[0] for r in server.requests] == ["HEAD"] * len(MODEL_FILES)
    assert result.downloaded == [] and sorted(result.skipped) == sorted(MODEL_FILES)
    assert result.bytes_written == 0
    assert_identical(tmp_path / "124M", files)


def test_file_of_wrong_size_is_downloaded_again(tmp_path, server, files):
    fetch(tmp_path, server)
    (tmp_path / "124M" / "hparams.json").write_bytes(b"{}")
    result = fetch(tmp_path, server)
    assert result.downloaded == ["hparams.json"]
    assert_identical(tmp_path / "124M", files)


def test_truncated_part_file_is_resumed_with_range(tmp_path, server, files):
    folder = tmp_path / "124M"
    fetch(tmp_path, server)
    (folder / BIG).unlink()
    (folder / f"{BIG}.part").write_bytes(files[BIG][:1000])
    server.requests.clear()
    result = fetch(tmp_path, server)
    assert [r[2] for r in server.gets()] == ["bytes=1000-"]
    assert result.downloaded == [BIG] and result.bytes_written == len(files[BIG]) - 1000
    assert_identical(folder, files)


def test_complete_part_file_is_just_renamed(tmp_path, server, files):
    folder = tmp_path / "124M"
    folder.mkdir()
    (folder / "vocab.bpe.part").write_bytes(files["vocab.bpe"])
    fetch(tmp_path, server)
    assert not [r for r in server.gets("vocab.bpe")]
    assert_identical(folder, files)


def test_server_ignoring_range_restarts_the_file_cleanly(tmp_path, server, files):
    server.ignore_range = True
    folder = tmp_path / "124M"
    folder.mkdir()
    (folder / f"{BIG}.part").write_bytes(b"x" * 1000)  # would corrupt the file if appended to
    result = fetch(tmp_path, server)
    assert [r[2] for r in server.gets(BIG)] == ["bytes=1000-"]
    assert result.bytes_written == sum(len(d) for d in files.values())
    assert_identical(folder, files)


def test_part_longer_than_the_remote_file_is_discarded(tmp_path, server, files):
    folder = tmp_path / "124M"
    folder.mkdir()
    (folder / "checkpoint.part").write_bytes(b"y" * (len(files["checkpoint"]) + 10))
    fetch(tmp_path, server)
    assert [r[2] for r in server.gets("checkpoint")] == [None]
    assert_identical(folder, files)


def test_range_past_the_end_416_restarts_the_file(tmp_path, server, files, monkeypatch):
    monkeypatch.setattr(download._FileFetch, "_remote_size", lambda self: None)  # size unknown
    folder = tmp_path / "124M"
    folder.mkdir()
    too_long = len(files["checkpoint"]) + 10
    (folder / "checkpoint.part").write_bytes(b"y" * too_long)
    fetch(tmp_path, server)
    assert [r[2] for r in server.gets("checkpoint")] == [f"bytes={too_long}-", None]
    assert_identical(folder, files)


def test_server_dying_mid_file_leaves_no_final_file_and_next_run_resumes(tmp_path, server, files):
    folder = tmp_path / "124M"
    server.die_gets = 1
    with pytest.raises(UserError, match=f"cannot reach {re.escape(server.url)}/124M/{BIG}"):
        fetch(tmp_path, server, retries=0)
    assert not (folder / BIG).exists()
    half = len(files[BIG]) // 2
    assert (folder / f"{BIG}.part").read_bytes() == files[BIG][:half]
    server.requests.clear()
    result = fetch(tmp_path, server, retries=0)
    assert [r[2] for r in server.gets(BIG)] == [f"bytes={half}-"]
    before = sum(len(files[n]) for n in MODEL_FILES[: MODEL_FILES.index(BIG)]) + half
    assert result.bytes_written == sum(len(d) for d in files.values()) - before
    assert_identical(folder, files)


def test_transient_failure_is_retried_and_resumed_in_one_run(tmp_path, server, files, sleeps):
    server.die_gets = 2
    fetch(tmp_path, server, retries=2, backoff=0.5)
    assert sleeps == [0.5, 1.0]
    ranges = [r[2] for r in server.gets(BIG)]
    half = len(files[BIG]) // 2
    assert ranges == [None, f"bytes={half}-", f"bytes={half + (len(files[BIG]) - half) // 2}-"]
    assert_identical(tmp_path / "124M", files)


def test_retries_are_bounded(tmp_path, server, sleeps):
    server.die_gets = 10
    with pytest.raises(UserError, match=r"\(after 3 tries\)"):
        fetch(tmp_path, server, retries=2)
    assert len(sleeps) == 2
    assert not (tmp_path / "124M" / BIG).exists()


def test_http_5xx_is_retried_and_the_download_completes(tmp_path, server, files, sleeps):
    server.fail_5xx = [503, 500, 502]
    fetch(tmp_path, server, retries=3, backoff=0.5)
    assert sleeps == [0.5, 1.0, 2.0]
    assert [r[1] for r in server.requests[:4]] == ["/124M/checkpoint"] * 4  # the same file again
    assert_identical(tmp_path / "124M", files)


def test_http_5xx_retries_are_bounded(tmp_path, server, sleeps):
    server.fail_5xx = [503] * 10
    with pytest.raises(UserError, match=r"HTTP 503 .*\(after 3 tries\)"):
        fetch(tmp_path, server, retries=2)
    assert len(sleeps) == 2 and len(server.requests) == 3


def test_http_404_is_a_one_line_error(tmp_path, server, sleeps):
    with pytest.raises(UserError) as info:
        fetch(tmp_path, server, name="355M")
    message = str(info.value)
    assert "\n" not in message
    assert f"{server.url}/355M/checkpoint" in message and "HTTP 404" in message
    assert sleeps == []  # a 404 is not retried
    assert not (tmp_path / "355M").exists()  # nothing written, not even an empty folder


def test_connection_refused_is_a_one_line_error_without_retries(tmp_path, sleeps):
    url = closed_port_url()
    with pytest.raises(UserError) as info:
        fetch(tmp_path, url, retries=5)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach {url}/124M/checkpoint: ")
    assert "refused" in message.lower() and "--base_url" in message
    assert sleeps == []


def test_timeout_is_retried_then_reported(tmp_path, server, sleeps):
    server.delay = 1.0
    with pytest.raises(UserError, match=r"timed out \(after 2 tries\)"):
        fetch(tmp_path, server, timeout=0.1, retries=1)
    assert len(sleeps) == 1


def test_server_without_head_is_sized_with_a_ranged_get(tmp_path, server, files):
    server.no_head = True
    fetch(tmp_path, server)
    assert_identical(tmp_path / "124M", files)
    server.requests.clear()
    result = fetch(tmp_path, server)
    assert len(result.skipped) == len(MODEL_FILES)
    assert {r[2] for r in server.gets()} == {"bytes=0-0"}  # sizing only, no bodies


def test_old_name_lands_in_the_new_folder(tmp_path, server, files):
    result = fetch(tmp_path, server, name="117M")
    assert result.folder == tmp_path / "124M"
    assert not (tmp_path / "117M").exists()
    assert all(r[1].startswith("/124M/") for r in server.requests)
    assert_identical(tmp_path / "124M", files)


def test_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(UserError) as info:
        download_model("125M", models_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "'125M'" in message
    assert all(name in message for name in ("124M", "355M", "774M", "1558M", "117M", "345M"))
    assert not (tmp_path / "125M").exists()


def test_any_plain_name_is_allowed_with_a_custom_base_url(tmp_path, files):
    fake = FakeServer({"my-model_v2": files})
    try:
        fetch(tmp_path, fake, name="my-model_v2")
    finally:
        fake.close()
    assert_identical(tmp_path / "my-model_v2", files)


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", ""])
def test_names_that_are_not_plain_folder_names_are_refused(tmp_path, name):
    with pytest.raises(UserError, match="bad model name"):
        fetch(tmp_path, "http://127.0.0.1:9", name=name)


def run_script(root, *args):
    return subprocess.run(
        [sys.executable, str(root / "download_model.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.mark.slow
def test_script_downloads_and_summarises(root, tmp_path, server, files):
    proc = run_script(root, "124M", "--base_url", server.url, "--models_dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"124M: 7 files downloaded, 0 skipped (already complete), "
        f"{sum(len(d) for d in files.values()) / 1e6:.1f} MB written to {tmp_path / '124M'}"
    )
    assert_identical(tmp_path / "124M", files)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, expected",
    [("refused", "cannot reach "), ("404", "HTTP 404"), ("unknown", "unknown model '999M'")],
)
def test_script_errors_are_one_line_with_exit_code_2(root, tmp_path, server, case, expected):
    args = {
        "refused": ["124M", "--base_url", closed_port_url()],
        "404": ["355M", "--base_url", server.url],
        "unknown": ["999M"],
    }[case]
    proc = run_script(root, *args, "--models_dir", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("download_model.py: error: ") and expected in lines[0]


# --- proxies ------------------------------------------------------------------------------------


class _ProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy: records each request line's target and fetches it from the fake server
    whatever host it names (so a host that exists nowhere is reachable only through the proxy);
    refuses CONNECT (HTTPS tunnels) with 502 after recording it."""

    def log_message(self, *args) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.seen.append(("CONNECT", self.path))  # type: ignore[attr-defined]
        self.send_error(502)

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        import http.client
        import urllib.parse

        self.server.seen.append((self.command, self.path))  # type: ignore[attr-defined]
        conn = http.client.HTTPConnection(*self.server.target, timeout=30)  # type: ignore[attr-defined]
        headers = {"Range": self.headers["Range"]} if self.headers.get("Range") else {}
        conn.request(self.command, urllib.parse.urlsplit(self.path).path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() in ("content-length", "content-range"):
                self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)
        conn.close()


@pytest.fixture
def proxy(server, monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    httpd.seen, httpd.target = [], server.httpd.server_address
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    # urllib's default opener reads the proxy variables once, when first built; a user's process
    # has them from its start, this test sets them late: build it afresh.
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("var", ["http_proxy", "HTTP_PROXY"])
def test_http_proxy_carries_the_download(tmp_path, server, files, proxy, monkeypatch, var):
    httpd, url = proxy
    monkeypatch.setenv(var, url)
    fetch(tmp_path, "http://models.invalid")  # .invalid never resolves: only the proxy knows it
    assert_identical(tmp_path / "124M", files)
    assert {target for _, target in httpd.seen} == {f"http://models.invalid/124M/{n}" for n in files}
    assert len(server.requests) == len(httpd.seen)


def test_https_proxy_is_asked_for_a_tunnel(tmp_path, server, proxy, monkeypatch, sleeps):
    httpd, url = proxy
    monkeypatch.setenv("https_proxy", url)
    with pytest.raises(UserError) as info:
        fetch(tmp_path, "https://models.invalid")
    assert httpd.seen and httpd.seen[0] == ("CONNECT", "models.invalid:443")
    assert "\n" not in str(info.value) and server.requests == []

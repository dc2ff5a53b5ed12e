"""serve.py end to end: one address line, answers, Ctrl+C stops cleanly; bad flags are one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from serve_util import tiny_models  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def start(root, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, str(root / "serve.py"), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_serve_script_serves_and_stops_on_ctrl_c(root, tiny_models):  # noqa: F811
    # 127.0.0.2 is loopback too, but not the default address: the warning must appear.
    proc = start(root, "--models_dir", tiny_models, "--model_name", "tiny", "--host", "127.0.0.2",
                 "--port", 0)  # fmt: skip
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "serve.py ended early:\n" + "".join(lines)
            lines.append(line)
            if "Ctrl+C" in line:
                break
        url = re.search(r"at (http://127\.0\.0\.2:\d+)/", lines[-1]).group(1)
        assert any("warning: listening on 127.0.0.2" in x for x in lines)
        assert httpx.get(url + "/health").json()["model"] == "tiny"
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 3}, timeout=120)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "server stopped" in err and "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("args, message", [
    (("--port", 70000), "--port must be between 0 and 65535"),
    (("--bogus", 1), "unknown flag --bogus"),
    (("--precision", "fp8"), "--precision must be one of auto, fp32, bf16, got 'fp8'"),
    (("--max_queue", 0), "--max_queue must be at least 1"),
    (("--model_name", "nothere"), "model 'nothere' not found"),
])  # fmt: skip
def test_bad_flags_are_one_line(root, tiny_models, args, message):  # noqa: F811
    proc = start(root, "--models_dir", tiny_models, *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [f"serve.py: error: {err.split('error: ', 1)[1].strip()}"]
    assert message in err

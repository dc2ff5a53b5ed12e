"""examples/finetune.ipynb executed end to end in a Jupyter kernel (tiny budget, nothing from the
internet), and Ctrl+C (a kernel interrupt) during `gpt2easy.finetune` in a notebook kernel."""

from __future__ import annotations

import queue
import time

import pytest

from gpt2easy.download import MODEL_FILES
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

HP = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=1)
KERNEL = "python3"  # jupyter_client runs a kernelspec whose argv[0] is "python" with this interpreter


def closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def outputs(nb, stream: str | None = None) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and stream in (None, out.name):
                text.append(out.text)
            elif out.output_type == "execute_result" and stream in (None, "result"):
                text.append(out.data.get("text/plain", ""))
    return "".join(text)


@pytest.mark.parametrize("path", ["download", "offline"])
def test_the_example_notebook_runs(path, root, tmp_path, make_model, vocab_dir, monkeypatch):
    """Download from a local mirror (a tiny model posing as 124M), or fail to and train from scratch."""
    from test_download import FakeServer

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "corpus.txt").write_text("To be, or not to be, that is the question.\n" * 30)
    HP.to_json(tmp_path / "tiny-hparams.json")
    server = None
    if path == "download":
        src = make_model(tmp_path / "served", HP, initial_weights(HP, seed=1))
        server = FakeServer({"124M": {n: (src / n).read_bytes() if (src / n).exists() else b"meta"
                                      for n in MODEL_FILES}})  # fmt: skip
    env = {"EXAMPLE_REPO": root, "EXAMPLE_WORKDIR": tmp_path, "EXAMPLE_MODELS_DIR": "models",
           "EXAMPLE_CORPUS": "corpus.txt", "EXAMPLE_STEPS": 2, "EXAMPLE_LENGTH": 5,
           "EXAMPLE_BASE_URL": server.url if server else closed_port_url(),
           "EXAMPLE_VOCAB": vocab_dir, "EXAMPLE_HPARAMS": tmp_path / "tiny-hparams.json"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    nb = nbformat.read(root / "examples" / "finetune.ipynb", as_version=4)
    try:
        nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if server:
            server.close()
    run = "notebook-124M" if path == "download" else "notebook-small"
    assert (tmp_path / "checkpoint" / run / "model-2.index").is_file()
    assert (tmp_path / "samples" / run / "samples-1").is_file()
    shown = outputs(nb)
    assert "FinetuneResult(steps=2, step=2" in shown
    assert ("training a small GPT-2 from scratch" in shown) == (path == "offline")
    assert shown.count("=" * 40) >= 2  # the two generated texts
    if path == "download":
        assert (tmp_path / "models" / "124M" / "model.ckpt.index").is_file()


def test_interrupting_the_kernel_stops_finetune_after_a_step_and_saves(root, tmp_path, make_model):
    from jupyter_client.manager import start_new_kernel

    from gpt2easy.dataset import save_npz

    make_model(tmp_path / "models" / "blank", HP)
    save_npz(tmp_path / "corpus.npz", [list(range(300))], HP.n_vocab)
    km, kc = start_new_kernel(kernel_name=KERNEL, cwd=str(tmp_path))
    try:
        def run(code: str, timeout: float = 300) -> tuple[dict, str]:
            """Execute `code`; (the reply's content, everything it wrote)."""
            msg_id = kc.execute(code)
            return _reply(kc, msg_id, timeout)

        reply, out = run(f"import logging, sys; sys.path.insert(0, {str(root / 'src')!r})\n"
                         "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
                         "import gpt2easy")  # fmt: skip
        assert reply["status"] == "ok", out
        msg_id = kc.execute("result = gpt2easy.finetune('corpus.npz', models_dir='models', "
                            "model_name='blank', run_name='nb', learning_rate=1e-3, seed=1, "
                            "sample_every=10**6)")  # fmt: skip: no steps: trains until interrupted
        seen = ""
        deadline = time.monotonic() + 300
        while "[2 |" not in seen and time.monotonic() < deadline:
            seen += _stream_text(kc, 1.0)
        assert "[2 |" in seen, seen
        km.interrupt_kernel()  # what the notebook's ■ button does
        reply, out = _reply(kc, msg_id, 300)
        assert reply["status"] == "ok", seen + out  # no KeyboardInterrupt: it stopped and saved
        assert "SIGINT: stopping after this step and saving" in seen + out
        reply, out = run("import signal\n"
                         "print(result.steps >= 2, result.checkpoint, signal.getsignal(signal.SIGINT)"
                         " is signal.default_int_handler)")  # fmt: skip
        steps_ok, checkpoint, restored = out.split()[-3:]
        assert steps_ok == "True" and restored == "True", out
        assert (tmp_path / f"{checkpoint}.index").is_file()
        msg_id = kc.execute("import time; time.sleep(120)")  # the next interrupt is a plain one
        time.sleep(2)
        km.interrupt_kernel()
        reply, _ = _reply(kc, msg_id, 60)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _stream_text(kc, timeout: float) -> str:
    try:
        msg = kc.get_iopub_msg(timeout=timeout)
    except queue.Empty:
        return ""
    if msg["msg_type"] == "stream":
        return msg["content"]["text"]
    if msg["msg_type"] == "error":
        return "\n".join(msg["content"]["traceback"])
    return ""


def _reply(kc, msg_id: str, timeout: float) -> tuple[dict, str]:
    """The shell reply to `msg_id` and the text its execution wrote (up to its idle status)."""
    deadline = time.monotonic() + timeout
    reply = None
    while reply is None and time.monotonic() < deadline:
        try:
            msg = kc.get_shell_msg(timeout=1.0)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            reply = msg["content"]
    if reply is None:
        raise AssertionError(f"no reply within {timeout} s")
    out = ""
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1.0)
        except queue.Empty:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        elif msg["msg_type"] == "error":
            out += "\n".join(msg["content"]["traceback"])
        elif (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
              and msg["parent_header"].get("msg_id") == msg_id):
            break
    return reply, out

"""`serve`: one model behind a local web page and OpenAI's completions API (see `server`).

`run_serve(ServeConfig(...))` loads the model, compiles generation for short prompts, starts the
worker thread (`scheduler`) and serves with uvicorn until Ctrl+C. `start_background(service)` runs
the same server in a thread (tests, benchmarks, notebooks).

Why Starlette + uvicorn: both small, widely used and maintained, pure Python to install; Starlette
gives routing, streaming responses and disconnect detection, uvicorn a hardened HTTP/1.1 parser
(h11) with connection limits and keep-alive timeouts. Writing HTTP or server-sent events by hand
would mean re-learning their edge cases (chunking, slow clients, half-closed sockets).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from pathlib import Path

from .errors import UserError
from .folders import ModelFlags
from .machine import PRECISION_CHOICES
from .options import opt

logger = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeConfig(ModelFlags):
    """The flags of `serve.py`: which model, where to listen, and what one request may ask for."""

    host: str = opt("127.0.0.1", "address to listen on; another than 127.0.0.1 exposes the model to "
                                 "the network (use --api_key)")
    port: int = opt(8000, "port to listen on (0 = any free port)", minimum=0, maximum=65535)
    api_key: str | None = opt(None, "require 'Authorization: Bearer KEY' on the API (default: none)")
    precision: str = opt("auto", "auto (bf16 where the CPU has native bf16 or on a GPU, else fp32), "
                                 "fp32 (exactly the reference model) or bf16", choices=PRECISION_CHOICES)
    max_batch: int = opt(8, "requests taken together by the generation worker", minimum=1, maximum=256)
    max_queue: int = opt(32, "requests waiting at most; more are answered 503 with Retry-After",
                         minimum=1)
    max_choices: int = opt(16, "prompts x n at most per request", minimum=1, maximum=256)
    max_prompt_tokens: int = opt(0, "prompt tokens at most per prompt (0 = the model's n_ctx)", minimum=0)
    max_body_kb: int = opt(1024, "request body size limit in KiB", minimum=1)
    read_timeout: float = opt(30.0, "seconds a client may take to send its request", minimum=0.1)
    max_connections: int = opt(256, "open connections at most (more get 503)", minimum=1)
    verbose: bool = opt(False, "more logging (and each request's random seed)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            lo, hi, choices = meta.get("minimum"), meta.get("maximum"), meta.get("choices")
            if choices and value not in choices:
                raise UserError(f"--{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
            if lo is None and hi is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"--{f.name} must be a number, got {value!r}")
            if f.type == "int" and value != int(value):
                raise UserError(f"--{f.name} must be a whole number, got {value!r}")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                bounds = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
                raise UserError(f"--{f.name} must be {bounds}, got {value}")


def build_service(cfg: ServeConfig, opened: tuple | None = None):
    """Load the model and make the `server.Service` (worker thread started, generation compiled);
    `opened`: what `locate.open_model` found for the flags, when the caller looked already."""
    from .locate import open_model
    from .openai_api import Limits
    from .sample import read_model
    from .scheduler import BatchingEngine, Scheduler
    from .server import Service

    hp, folder, prefix = opened or open_model(cfg.models_dir, cfg.model_name, cfg.run_name,
                                              cfg.checkpoint)
    generator, encoder = read_model((hp, folder, prefix), cfg.precision)
    engine = BatchingEngine(generator, max_rows=cfg.max_batch)
    engine.warm_up()
    scheduler = Scheduler(engine, encoder, max_batch=cfg.max_batch, max_queue=cfg.max_queue).start()
    model_id = cfg.run_name or (Path(prefix).parent.name if cfg.checkpoint else str(cfg.model_name))
    limits = Limits(n_ctx=hp.n_ctx, n_vocab=hp.n_vocab,
                    max_prompt_tokens=min(cfg.max_prompt_tokens or hp.n_ctx, hp.n_ctx),
                    max_choices=cfg.max_choices)  # fmt: skip
    info = {"n_params": hp.n_params(), "n_ctx": hp.n_ctx, "n_layer": hp.n_layer, "n_embd": hp.n_embd,
            "n_head": hp.n_head, "precision": generator.precision, "weights": Path(prefix).name,
            "created": int(time.time())}  # fmt: skip
    return Service(scheduler=scheduler, encoder=encoder, model_id=model_id, limits=limits, info=info,
                   run_dir=Path(prefix).parent, api_key=cfg.api_key or None,
                   max_body_bytes=cfg.max_body_kb * 1024, read_timeout=cfg.read_timeout)  # fmt: skip


def _guarded_h11(head_timeout: float):
    """uvicorn's HTTP/1.1 protocol plus a deadline for the first request head: uvicorn times out
    idle keep-alive connections but not a client that connects and never (or very slowly) sends its
    headers, which would hold a connection slot for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(head_timeout, self._head_late)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _head_late(self) -> None:
            self._head_timer = None
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def _uvicorn(service, cfg: ServeConfig):
    import uvicorn

    from .server import create_app

    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False,
                            lifespan="off", ws="none", http=_guarded_h11(service.read_timeout),
                            timeout_keep_alive=5,
                            limit_concurrency=cfg.max_connections, timeout_graceful_shutdown=3,
                            h11_max_incomplete_event_size=64 * 1024)  # fmt: skip
    return uvicorn.Server(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port)") \
            from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(cfg: ServeConfig) -> None:
    """Serve a model: a web page at / and OpenAI's completions API at /v1 (local only by default)."""
    from . import cli
    from .locate import open_model

    opened = open_model(cfg.models_dir, cfg.model_name, cfg.run_name, cfg.checkpoint)
    cli.quiet_tensorflow()  # after the model folder is checked: a wrong one is one quick line
    run_serve(cfg, opened)


def run_serve(cfg: ServeConfig, opened: tuple | None = None) -> None:
    """Serve until Ctrl+C (or SIGTERM); then finish the current token and stop."""
    sock = _bind(cfg.host, cfg.port)
    if cfg.host not in LOCAL_HOSTS:
        logger.warning("warning: listening on %s: anyone who can reach this machine can use the model%s",
                       cfg.host, "" if cfg.api_key else " (no --api_key set)")
    service = build_service(cfg, opened)
    server = _uvicorn(service, cfg)
    url = url_of(cfg.host, sock.getsockname()[1])
    logger.info("serving %s (%.1fM parameters) at %s/ (OpenAI API: %s/v1); Ctrl+C stops",
                service.model_id, service.info["n_params"] / 1e6, url, url)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        service.scheduler.stop()
        sock.close()
    logger.info("server stopped")


class start_background:  # noqa: N801 (used like a function)
    """Run `service` on host:port in a daemon thread: `with start_background(service) as url: ...`."""

    def __init__(self, service, host: str = "127.0.0.1", port: int = 0, **flags):
        self.service = service
        self.sock = _bind(host, port)
        self.url = url_of(host, self.sock.getsockname()[1])
        self.server = _uvicorn(service, ServeConfig(host=host, port=port, **flags))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)  # fmt: skip

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

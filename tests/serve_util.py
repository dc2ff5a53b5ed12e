"""Shared set-up of the server tests: a tiny random model loaded once, services and servers on it."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights

HP = HParams(n_vocab=50257, n_ctx=64, n_embd=16, n_head=2, n_layer=1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, make_model) -> Path:
    """A models folder holding `tiny`, a random GPT-2 of context 64 in OpenAI's layout."""
    root = tmp_path_factory.mktemp("models")
    make_model(root / "tiny", HP, initial_weights(HP, seed=1))
    return root


@pytest.fixture(scope="session")
def loaded(tiny_models):
    """(generator, encoder, hparams) of the tiny model, loaded and compiled once per session."""
    from gpt2easy.sample import load

    return load(str(tiny_models), "tiny", None, None, "fp32")


class SlowEngine:
    """The server's batching engine, slowed down by `delay` seconds per step and counting its
    steps, so that tests can catch a request in the middle of its generation."""

    def __init__(self, generator, delay: float = 0.0):
        from gpt2easy.scheduler import BatchingEngine

        self.inner, self.delay, self.steps = BatchingEngine(generator), delay, 0
        self.batches: list[int] = []  # jobs per run_batch call

    def run_batch(self, jobs):
        self.batches.append(len(jobs))
        for event in self.inner.run_batch(jobs):
            self.steps += 1
            time.sleep(self.delay)
            yield event


def make_service(loaded, engine=None, max_queue=64, max_batch=8, **kw):
    from gpt2easy.openai_api import Limits
    from gpt2easy.scheduler import BatchingEngine, Scheduler
    from gpt2easy.server import Service

    generator, encoder, hp = loaded
    engine = engine or BatchingEngine(generator, max_rows=max_batch)
    scheduler = Scheduler(engine, encoder, max_batch=max_batch,
                          max_queue=max_queue).start()  # fmt: skip
    limits = Limits(n_ctx=hp.n_ctx, n_vocab=hp.n_vocab,
                    max_prompt_tokens=kw.pop("max_prompt_tokens", hp.n_ctx),
                    max_choices=kw.pop("max_choices", 16))  # fmt: skip
    info = {"n_params": hp.n_params(), "n_ctx": hp.n_ctx, "n_layer": hp.n_layer, "n_embd": hp.n_embd,
            "n_head": hp.n_head, "precision": "fp32", "weights": "model.ckpt", "created": 0}  # fmt: skip
    return Service(scheduler=scheduler, encoder=encoder, model_id="tiny", limits=limits, info=info, **kw)


@contextlib.contextmanager
def serving(service):
    """The service on a free port of 127.0.0.1 in a background thread: yields the base URL."""
    from gpt2easy.serve import start_background

    try:
        with start_background(service) as url:
            yield url
    finally:
        service.scheduler.stop()

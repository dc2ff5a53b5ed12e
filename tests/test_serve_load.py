"""The server under load: 50 concurrent clients, clients that leave mid-generation, a full queue."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from serve_util import SlowEngine, loaded, make_service, serving, tiny_models  # noqa: F401 (fixtures)


def alone(loaded, prompt: str, seed: int, length: int, n: int = 1) -> list[str]:  # noqa: F811
    """The texts `sample.sample_batch` (what interactive_conditional_samples.py runs) gives."""
    from gpt2easy.sample import Settings, sample_batch

    generator, encoder, _ = loaded
    texts = [""] * n
    settings = Settings(length=length, top_k=20, seed=seed)
    for row, piece, _ in sample_batch(generator, encoder, encoder.encode(prompt), n, settings, 0):
        texts[row] += piece
    return texts


def wait_idle(service, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while (service.scheduler.busy_since is not None or service.scheduler.waiting) \
            and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.02)


def test_fifty_concurrent_clients_each_get_their_own_answer(loaded):  # noqa: F811
    prompts = ["Hello", "The quick brown fox", "Once upon a time", "A"]
    cases = [(prompts[i % 4], 100 + i, 3 + i % 5, 1 + (i % 3 == 0)) for i in range(50)]
    expected = [alone(loaded, p, s, length, n) for p, s, length, n in cases]  # before the server runs
    service = make_service(loaded, max_queue=64)

    async def one(client, i):
        prompt, seed, length, n = cases[i]
        body = {"prompt": prompt, "seed": seed, "max_tokens": length, "n": n, "top_k": 20}
        if i % 2:  # half of them stream
            texts = [""] * n
            async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        for c in json.loads(line[6:])["choices"]:
                            texts[c["index"]] += c["text"]
            return texts
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return [c["text"] for c in r.json()["choices"]]

    async def everyone(url):
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(50)))

    with serving(service) as url:
        answers = asyncio.run(everyone(url))
    assert answers == expected


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_stops_costing_compute(loaded, stream):  # noqa: F811
    engine = SlowEngine(loaded[0], delay=0.05)
    service = make_service(loaded, engine=engine)
    body = {"prompt": "Hello", "max_tokens": 60, "seed": 1, "stream": stream}
    with serving(service) as url:
        if stream:
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data: {")
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
        wait_idle(service)
        steps = engine.steps
        assert service.scheduler.busy_since is None
        assert steps < 30, f"{steps} of 60 steps ran for a client that left"
        # The server goes on serving.
        r = httpx.post(url + "/v1/completions", json={**body, "max_tokens": 3, "stream": False}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3


def test_a_full_queue_answers_503_with_retry_after(loaded):  # noqa: F811
    engine = SlowEngine(loaded[0], delay=0.05)
    service = make_service(loaded, engine=engine, max_queue=1, max_batch=1)
    results = {}

    def post(name, **kw):
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "seed": 1, **kw}, timeout=120)
        results[name] = r

    with serving(service) as url:
        running = threading.Thread(target=post, args=("running",), kwargs={"max_tokens": 40})
        running.start()
        while service.scheduler.busy_since is None:
            time.sleep(0.01)
        waiting = threading.Thread(target=post, args=("waiting",), kwargs={"max_tokens": 2})
        waiting.start()
        while service.scheduler.waiting < 1:
            time.sleep(0.01)
        health = httpx.get(url + "/health").json()
        assert health["waiting"] == 1 and health["generating"]
        refused = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "server_busy"
        running.join()
        waiting.join()
        assert results["running"].status_code == 200 and results["waiting"].status_code == 200
        # Once the queue drains, requests are accepted again.
        assert httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                          timeout=60).status_code == 200  # fmt: skip


def test_requests_that_arrive_together_are_taken_as_one_batch(loaded):  # noqa: F811
    engine = SlowEngine(loaded[0], delay=0.05)
    service = make_service(loaded, engine=engine, max_batch=8)
    results = []

    def post(max_tokens):
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "seed": 1, "max_tokens": max_tokens},
                       timeout=120)  # fmt: skip
        results.append(r.status_code)

    with serving(service) as url:
        first = threading.Thread(target=post, args=(20,))
        first.start()
        while service.scheduler.busy_since is None:
            time.sleep(0.01)
        others = [threading.Thread(target=post, args=(2,)) for _ in range(5)]
        for t in others:
            t.start()
        while service.scheduler.waiting < 5:
            time.sleep(0.01)
        for t in [first, *others]:
            t.join()
    assert results == [200] * 6
    assert engine.batches == [1, 5]  # the five that waited together ran as one batch


def test_the_worker_survives_a_failing_batch(loaded):  # noqa: F811
    class Failing:
        calls = 0

        def run_batch(self, jobs):
            Failing.calls += 1
            if Failing.calls == 1:
                raise RuntimeError("boom")
            yield from SlowEngine(loaded[0]).run_batch(jobs)

    service = make_service(loaded, engine=Failing())
    with serving(service) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200

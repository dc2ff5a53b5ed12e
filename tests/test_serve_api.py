"""The server against the official `openai` client: answers, streams, seeds, stops, usage, chat,
and the same text as interactive_conditional_samples.py with the same flags."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from serve_util import HP, loaded, make_service, serving, tiny_models  # noqa: F401 (fixtures)

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(loaded):  # noqa: F811
    service = make_service(loaded)
    with serving(service) as url:
        yield url, service


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def complete(client, prompt="Hello", **kw):
    kw.setdefault("max_tokens", 6)
    top_k = kw.pop("top_k", None)
    extra = {"top_k": top_k} if top_k is not None else None
    return client.completions.create(model="tiny", prompt=prompt, extra_body=extra, **kw)


def stream_texts(client, prompt="Hello", **kw):
    """Streamed choices joined per index, their finish reasons, the usage chunk and chunk count."""
    texts, reasons, usage, count = {}, {}, None, 0
    for chunk in complete(client, prompt, stream=True, stream_options={"include_usage": True}, **kw):
        count += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    return texts, reasons, usage, count


def test_completion_shape_usage_and_seed(client, loaded):  # noqa: F811
    _, encoder, _ = loaded
    a = complete(client, "Hello there", seed=3, max_tokens=8)
    b = complete(client, "Hello there", seed=3, max_tokens=8)
    c = complete(client, "Hello there", seed=4, max_tokens=8)
    assert a.object == "text_completion" and a.model == "tiny" and a.id.startswith("cmpl-")
    assert len(a.choices) == 1 and a.choices[0].index == 0
    assert a.choices[0].text == b.choices[0].text != c.choices[0].text
    # A random model rarely ends a text; 8 tokens generated unless it drew <|endoftext|>.
    n_new = len(encoder.encode(a.choices[0].text))
    assert a.usage.prompt_tokens == len(encoder.encode("Hello there"))
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    if a.choices[0].finish_reason == "length":
        assert a.usage.completion_tokens == 8 and n_new <= 8


def test_stream_equals_the_whole_answer(client):
    whole = complete(client, "Once upon", seed=11, n=2, top_k=20, max_tokens=10)
    texts, reasons, usage, count = stream_texts(client, "Once upon", seed=11, n=2, top_k=20, max_tokens=10)
    assert texts == {c.index: c.text for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert count > 4  # pieces arrive one by one, not as one block


def test_prompt_list_and_n_give_prompt_major_choices(client):
    both = complete(client, ["Hello", "The cat"], n=2, seed=5)
    one = complete(client, "The cat", n=2, seed=5)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    assert [c.text for c in both.choices[2:]] == [c.text for c in one.choices]
    assert both.choices[0].text != both.choices[1].text


def test_token_id_prompts(client, loaded):  # noqa: F811
    _, encoder, _ = loaded
    by_text = complete(client, "Hello world", seed=2)
    by_ids = complete(client, encoder.encode("Hello world"), seed=2)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_temperature_zero_is_greedy(client, loaded):  # noqa: F811
    """Greedy text ignores the seed and is the argmax of the reference forward pass (`model.model`
    on the same weights, no cache) at each step."""
    _, encoder, hp = loaded
    a = complete(client, "Hello", temperature=0, seed=1, max_tokens=5)
    b = complete(client, "Hello", temperature=0, seed=2, max_tokens=5)
    assert a.choices[0].text == b.choices[0].text
    from gpt2easy.model import initial_weights, model

    weights = initial_weights(HP, seed=1)  # what the tiny_models fixture wrote
    prompt = encoder.encode("Hello")
    ids = list(prompt)
    for _ in range(5):
        logits, _ = model(weights, np.array([ids], np.int32), hp)
        ids.append(int(np.argmax(np.asarray(logits)[0, -1])))
    assert a.choices[0].text == encoder.decode(ids[len(prompt):])


def test_stop_string_cuts_the_text(client):
    free = complete(client, "Hello", seed=9, max_tokens=12).choices[0].text
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    assert stop and stop in free
    cut = complete(client, "Hello", seed=9, max_tokens=12, stop=[stop])
    assert cut.choices[0].text == free[: free.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    texts, reasons, _, _ = stream_texts(client, "Hello", seed=9, max_tokens=12, stop=stop)
    assert texts[0] == cut.choices[0].text and reasons[0] == "stop"


def test_chat_joins_messages_into_a_prompt(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, seed=4, max_tokens=6,
                                          stop=["\n\n\n\n"])  # fmt: skip
    plain = complete(client, "System: Be brief.\nUser: Hi\nAssistant:", seed=4, max_tokens=6,
                     stop=["\n\n\n\n"])  # fmt: skip
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text
    pieces = list(client.chat.completions.create(model="tiny", messages=messages, seed=4, max_tokens=6,
                                                 stop=["\n\n\n\n"], stream=True))  # fmt: skip
    assert pieces[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in pieces) == plain.choices[0].text
    assert pieces[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(server[0] + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"


def test_api_key(loaded, server):  # noqa: F811
    service = dataclasses.replace(server[1], api_key="s3cret")
    from gpt2easy.serve import start_background

    with start_background(service) as url:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="tiny", prompt="Hi", max_tokens=2)
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0, timeout=60)
        assert good.completions.create(model="tiny", prompt="Hi", max_tokens=2).choices
        assert httpx.get(url + "/health").status_code == 200  # health and the page stay open
        assert httpx.get(url + "/").status_code == 200


@pytest.mark.slow
def test_same_text_as_the_interactive_script(client, root, tiny_models):  # noqa: F811
    """The same prompt, seed and flags give the same samples as interactive_conditional_samples.py
    (n choices = --nsamples n --batch_size n)."""
    flags = {"length": 9, "seed": 21, "top_k": 30, "top_p": 0.9, "temperature": 0.7,
             "repetition_penalty": 1.2, "precision": "fp32"}  # fmt: skip  (the test server's)
    args = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    out = subprocess.run(
        [sys.executable, str(root / "interactive_conditional_samples.py"), "--models_dir",
         str(tiny_models), "--model_name", "tiny", "--nsamples", "3", "--batch_size", "3", *args],
        input="To be or not\n", capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    banner = "=" * 40 + " SAMPLE {} " + "=" * 40 + "\n"
    body = out.stdout.split("=" * 80)[0]
    samples = [body.split(banner.format(i))[1].split("=" * 40)[0].removesuffix("\n") for i in (1, 2, 3)]
    answer = client.completions.create(
        model="tiny", prompt="To be or not", n=3, max_tokens=flags["length"], seed=flags["seed"],
        top_p=flags["top_p"], temperature=flags["temperature"],
        extra_body={"top_k": flags["top_k"], "repetition_penalty": flags["repetition_penalty"]})
    assert [c.text for c in answer.choices] == samples

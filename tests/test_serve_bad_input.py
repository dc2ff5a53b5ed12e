"""Every kind of bad request gets an OpenAI-shaped JSON error naming the problem; none ends the server."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from serve_util import loaded, make_service, serving, tiny_models  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def url(loaded):  # noqa: F811
    service = make_service(loaded, max_body_bytes=4096, read_timeout=1.0, max_prompt_tokens=20,
                           max_choices=4)  # fmt: skip
    with serving(service) as url:
        yield url


OK = {"prompt": "Hi", "max_tokens": 2}

BAD_COMPLETIONS = [
    ({"prompt": 5}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [70000]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": "word " * 40}, "prompt"),  # over --max_prompt_tokens 20
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 65}, "max_tokens"),  # over n_ctx 64
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"prompt": "word " * 15, "max_tokens": 60}, "max_tokens"),  # prompt + max_tokens > n_ctx + 1
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"n": 0}, "n"),
    ({"n": 5}, "n"),  # over --max_choices 4
    ({"prompt": ["a", "b", "c"], "n": 2}, "n"),
    ({"stop": 3}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"seed": "x"}, "seed"),
    ({"seed": 2**70}, "seed"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"foo": 1}}, "stream_options"),
    ({"echo": True}, "echo"),
    ({"logprobs": 3}, "logprobs"),
    ({"best_of": 3}, "best_of"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"suffix": "end"}, "suffix"),
    ({"model": 3}, "model"),
    ({"temprature": 0.5}, "temprature"),  # unknown field
    ({"models_dir": "/etc"}, "models_dir"),  # no file paths from requests
]


@pytest.mark.parametrize("change, field", BAD_COMPLETIONS, ids=[str(c) for c, _ in BAD_COMPLETIONS])
def test_bad_completion_fields(url, change, field):
    r = httpx.post(url + "/v1/completions", json={**OK, **change}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["message"] and error["param"] == field


BAD_CHAT = [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
]


@pytest.mark.parametrize("body, field", BAD_CHAT, ids=[str(b) for b, _ in BAD_CHAT])
def test_bad_chat_fields(url, body, field):
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]


@pytest.mark.parametrize("raw", [b"{bad", b"", b"[1, 2]", b'"text"', b"null", b'{"prompt": NaN}',
                                 b"\xff\xfe", b"[" * 100000 + b"]" * 100000])  # fmt: skip
def test_malformed_bodies(url, raw):
    r = httpx.post(url + "/v1/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413), r.text
    assert r.json()["error"]["message"]


def test_other_model_is_refused(url):
    r = httpx.post(url + "/v1/completions", json={**OK, "model": "gpt-4"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "tiny" in r.json()["error"]["message"]


def test_body_size_limit(url):
    r = httpx.post(url + "/v1/completions", json={**OK, "user": "x" * 5000})
    assert r.status_code == 413 and "4096" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    r = httpx.post(url + "/v1/completions", content=chunks())
    assert r.status_code == 413


def test_slow_client_times_out(url):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"prompt\": ")  # fmt: skip
        t = time.monotonic()
        answer = b""
        while b"not received" not in answer and time.monotonic() - t < 8:
            answer += s.recv(4096)  # the head and the body may come in separate reads
    assert answer.startswith(b"HTTP/1.1 408") and b"not received" in answer


def test_a_client_that_never_sends_its_headers_is_disconnected(url):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/compl")  # and then nothing
        t = time.monotonic()
        assert s.recv(4096) == b""  # closed by the server
        assert time.monotonic() - t < 8


def test_wrong_methods_and_paths(url):
    r = httpx.get(url + "/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["message"]
    r = httpx.post(url + "/v1/embeddings", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(url + "/v1/models/other")
    assert r.status_code == 404


def test_the_server_still_answers(url):
    r = httpx.post(url + "/v1/completions", json={**OK, "seed": 1}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")

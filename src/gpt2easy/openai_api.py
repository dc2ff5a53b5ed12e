"""OpenAI's completions API as plain data: checking request bodies, shaping answers and errors.

No TensorFlow and no web framework here, so the rules are easy to test and to read:
- `parse_completion(body, limits)` / `parse_chat(body, limits)` turn a decoded JSON body into a
  `Query` or raise `ApiError` (status 400, OpenAI's error shape, the message naming the field).
  Unknown fields are refused as OpenAI refuses them ("Unrecognized request argument supplied");
  OpenAI fields we don't implement are accepted only at their neutral value (`echo: false`,
  `presence_penalty: 0`, ...), so a client never silently gets something other than it asked for.
- Chat: GPT-2 is not a chat model. The messages become one plain prompt, `Role: text` per line,
  ending with `Assistant:`; unless the request gives `stop`, generation stops at a new `User:` line.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

MAX_STOPS = 4  # as OpenAI


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None, headers=None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for (the server's flags)."""

    n_ctx: int
    n_vocab: int
    max_prompt_tokens: int
    max_choices: int  # prompts x n
    default_max_tokens: int = 16  # OpenAI's default


@dataclasses.dataclass(frozen=True)
class Query:
    """A checked request: prompts as token ids (encoded later when given as text)."""

    prompts: list  # each a str or a list of int ids
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    n: int
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    model: str | None
    chat: bool = False


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param)


def _num(body, name, default, kind, lo=None, hi=None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, f"must be a number, got {type(value).__name__} {value!r:.40}")
    if kind is int and value != int(value):
        raise _bad(name, f"must be a whole number, got {value!r}")
    value = kind(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(name, f"must be between {lo} and {hi}, got {value}" if hi is not None
                   else f"must be at least {lo}, got {value}")
    return value


def _bool(body, name, default=False):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(name, f"must be true or false, got {value!r:.40}")
    return value


def _neutral(body, name, ok) -> None:
    """OpenAI fields we don't implement: fine at their neutral value, refused otherwise."""
    if name in body and body[name] is not None and not ok(body[name]):
        raise _bad(name, f"is not supported by this server (got {body[name]!r:.40})")


def _stops(body) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _bad("stop", "must be a string or a list of strings")
    if len(items) > MAX_STOPS:
        raise _bad("stop", f"at most {MAX_STOPS} stop strings, got {len(items)}")
    if any(not s for s in items):
        raise _bad("stop", "stop strings must not be empty")
    return tuple(items)


def _prompts(body, limits: Limits) -> list:
    prompt = body.get("prompt", "<|endoftext|>")
    ids = lambda p: isinstance(p, list) and all(  # noqa: E731
        isinstance(t, int) and not isinstance(t, bool) for t in p)
    if isinstance(prompt, str) or (ids(prompt) and prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or (ids(p) and p) for p in prompt):
        prompts = list(prompt)
    else:
        raise _bad("prompt", "must be a string, a list of strings, a list of token ids or a list of "
                             "lists of token ids (none empty)")
    for p in prompts:
        if isinstance(p, list) and not all(0 <= t < limits.n_vocab for t in p):
            raise _bad("prompt", f"token ids must be between 0 and {limits.n_vocab - 1}")
    return prompts


def _common(body: dict, limits: Limits, allowed: set[str], *, chat: bool) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}",
                       param=unknown[0])
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "must be a string")
    for name in ("presence_penalty", "frequency_penalty"):
        _neutral(body, name, lambda v: v == 0)
    _neutral(body, "logit_bias", lambda v: v == {})
    _neutral(body, "user", lambda v: isinstance(v, str))
    n = _num(body, "n", 1, int, 1, limits.max_choices)
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise _bad("stream_options", 'must be an object like {"include_usage": true}')
    tokens_name = "max_tokens"
    if chat and body.get("max_completion_tokens") is not None:
        tokens_name = "max_completion_tokens"
    return dict(
        model=model, n=n,
        max_tokens=_num(body, tokens_name, limits.default_max_tokens, int, 1, limits.n_ctx),
        temperature=_num(body, "temperature", 1.0, float, 0.0, 2.0),
        top_p=_num(body, "top_p", 1.0, float, 0.0, 1.0),
        top_k=_num(body, "top_k", 0, int, 0, limits.n_vocab),
        repetition_penalty=_num(body, "repetition_penalty", 1.0, float, 0.01, 100.0),
        stop=_stops(body),
        seed=_num(body, "seed", None, int, -(2**63), 2**63 - 1),
        stream=_bool(body, "stream"),
        include_usage=_bool(options or {}, "include_usage"),
        chat=chat,
    )  # fmt: skip


COMPLETION_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop",
                     "seed", "stream", "stream_options", "repetition_penalty", "echo", "logprobs",
                     "best_of", "suffix", "presence_penalty", "frequency_penalty", "logit_bias",
                     "user"}  # fmt: skip
CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
               "top_k", "n", "stop", "seed", "stream", "stream_options", "repetition_penalty",
               "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
               "user"}  # fmt: skip


def parse_completion(body, limits: Limits) -> Query:
    """A `POST /v1/completions` body -> Query, or ApiError(400) naming the first bad field."""
    q = _common(body, limits, COMPLETION_FIELDS, chat=False)
    _neutral(body, "echo", lambda v: v is False)
    _neutral(body, "logprobs", lambda v: v == 0 and not isinstance(v, bool))
    _neutral(body, "best_of", lambda v: v == q["n"] and not isinstance(v, bool))
    _neutral(body, "suffix", lambda v: v == "")
    prompts = _prompts(body, limits)
    _check_choices(len(prompts), q["n"], limits)
    return Query(prompts=prompts, **q)


def parse_chat(body, limits: Limits) -> Query:
    """A `POST /v1/chat/completions` body -> Query with the messages joined into one prompt."""
    q = _common(body, limits, CHAT_FIELDS, chat=True)
    _neutral(body, "logprobs", lambda v: v is False)
    _neutral(body, "top_logprobs", lambda v: v == 0 and not isinstance(v, bool))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty list of {role, content} objects")
    lines = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or set(m) - {"role", "content", "name"}:
            raise _bad(where, "must be an object with role, content and optionally name")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(f"{where}.role", "must be system, developer, user or assistant")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            if not all(isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
                       for c in content):  # fmt: skip
                raise _bad(f"{where}.content", "only text parts are supported")
            content = "".join(c["text"] for c in content)
        if not isinstance(content, str):
            raise _bad(f"{where}.content", "must be a string")
        lines.append(f"{role.capitalize()}: {content}\n")
    _check_choices(1, q["n"], limits)
    if not q["stop"] and body.get("stop") is None:
        q["stop"] = ("\nUser:",)
    return Query(prompts=["".join(lines) + "Assistant:"], **q)


def _check_choices(prompts: int, n: int, limits: Limits) -> None:
    if prompts * n > limits.max_choices:
        raise _bad("n", f"prompts x n must be at most {limits.max_choices}, got {prompts} x {n}")


def check_prompt_ids(ids: list[int], max_tokens: int, limits: Limits, param: str = "prompt") -> None:
    """The prompt-length limit and the context rule (prompt + max_tokens <= n_ctx + 1: the last new
    token is never fed back)."""
    if len(ids) > limits.max_prompt_tokens:
        raise _bad(param, f"has {len(ids)} tokens; this server accepts at most {limits.max_prompt_tokens}")
    if len(ids) + max_tokens > limits.n_ctx + 1:
        raise _bad("max_tokens", f"this model's context is {limits.n_ctx} tokens: the prompt has "
                                 f"{len(ids)}, so max_tokens can be at most {limits.n_ctx + 1 - len(ids)}, "
                                 f"got {max_tokens}")  # fmt: skip


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def response(q: Query, rid: str, model: str, texts: list[str], reasons: list[str], use: dict) -> dict:
    """The whole (non-streamed) answer."""
    pairs = enumerate(zip(texts, reasons, strict=True))
    if q.chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                    "finish_reason": r} for i, (t, r) in pairs]  # fmt: skip
    else:
        choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r} for i, (t, r) in pairs]
    return {"id": rid, "object": "chat.completion" if q.chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices, "usage": use,
            "system_fingerprint": None}  # fmt: skip


def chunk(q: Query, rid: str, model: str, index: int | None, text: str | None = None,
          reason: str | None = None, use: dict | None = None, first: bool = False) -> dict:  # fmt: skip
    """One server-sent event of a streamed answer (index None: the final usage-only chunk)."""
    choices = []
    if index is not None:
        if q.chat:
            delta = {"role": "assistant", "content": text or ""} if first else (
                {"content": text} if text else {})
            choices = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]
        else:
            choices = [{"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}]
    out = {"id": rid, "object": "chat.completion.chunk" if q.chat else "text_completion",
           "created": int(time.time()), "model": model, "choices": choices, "system_fingerprint": None}
    if q.include_usage:
        out["usage"] = use
    return out

"""The HTTP side of `serve`: a Starlette app speaking OpenAI's completions API, plus the web page.

Routes: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`,
`GET /` (the page, `web/` in this package), `GET /api/info` and `GET /api/metrics` (the page's data).
Handlers only check, encode and wait: generation runs in the `scheduler` worker thread, so the
event loop never blocks. Every error is answered in OpenAI's JSON shape; no request can end the
server. A client that goes away (stream closed, connection dropped) cancels its request: the worker
stops its rows before the next token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import metrics, openai_api
from .openai_api import ApiError, Limits
from .sample import Settings, pick_seed
from .scheduler import Busy, Job, Scheduler, Ticket
from .tokens import ENDOFTEXT_ID

logger = logging.getLogger(__name__)

PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}  # fmt: skip


@dataclasses.dataclass
class Service:
    """What the app serves: one loaded model behind one scheduler, and the server's limits."""

    scheduler: Scheduler
    encoder: object
    model_id: str
    limits: Limits
    info: dict  # shown by the page: name, size, shape, precision, where the weights came from
    run_dir: Path | None = None  # the training run folder, for its metrics.jsonl
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    read_timeout: float = 30.0  # seconds to receive a request body
    retry_after: int = 1


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(service: Service) -> Starlette:
    """The Starlette app for `service` (see the module docstring)."""
    api = _Api(service)
    routes = [
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", api.model, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/api/info", api.page_info, methods=["GET"]),
        Route("/api/metrics", api.page_metrics, methods=["GET"]),
        *(Route(path, api.page_file, methods=["GET"]) for path in PAGE_FILES),
    ]

    async def http_error(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       kind=kind))  # fmt: skip

    async def api_error(request, exc: ApiError):
        return error_response(exc)

    async def crash(request, exc: Exception):
        logger.exception("request failed")
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error"))

    return Starlette(routes=routes, exception_handlers={
        HTTPException: http_error, ApiError: api_error, Exception: crash})  # fmt: skip


class _Api:
    def __init__(self, service: Service):
        self.s = service

    # --- plumbing -----------------------------------------------------------------------------

    def _auth(self, request: Request) -> None:
        key = self.s.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer "
                                "KEY' with the server's --api_key", code="invalid_api_key")  # fmt: skip

    async def _json(self, request: Request):
        limit = self.s.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body over {limit} bytes")

        async def read() -> bytes:
            parts, size = [], 0
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise ApiError(413, f"request body over {limit} bytes")
                parts.append(part)
            return b"".join(parts)

        try:
            raw = await asyncio.wait_for(read(), self.s.read_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"request body not received within {self.s.read_timeout:g} s") from None

        def no_constants(name):
            raise ValueError(f"{name} is not valid JSON")

        try:
            return json.loads(raw, parse_constant=no_constants)
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"We could not parse the JSON body of your request ({e}); send a JSON "
                                "object with Content-Type: application/json") from None  # fmt: skip

    # --- the OpenAI API -----------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, chat: bool) -> Response:
        self._auth(request)
        body = await self._json(request)
        limits = self.s.limits
        q = openai_api.parse_chat(body, limits) if chat else openai_api.parse_completion(body, limits)
        if q.model is not None and q.model != self.s.model_id:
            raise ApiError(404, f"The model `{q.model}` does not exist on this server; it serves "
                                f"`{self.s.model_id}` (GET /v1/models)", param="model",
                           code="model_not_found")  # fmt: skip
        seed = pick_seed(q.seed)
        jobs, prompt_tokens = [], 0
        for i, prompt in enumerate(q.prompts):
            if isinstance(prompt, str):
                ids = await asyncio.to_thread(self.s.encoder.encode, prompt) if len(prompt) > 2000 \
                    else self.s.encoder.encode(prompt)
            else:
                ids = list(prompt)
            ids = ids or [ENDOFTEXT_ID]  # an empty prompt: start a new document
            openai_api.check_prompt_ids(ids, q.max_tokens, limits)
            prompt_tokens += len(ids)
            settings = Settings(length=q.max_tokens, temperature=q.temperature, top_k=q.top_k,
                                top_p=q.top_p, repetition_penalty=q.repetition_penalty, stop=q.stop,
                                seed=seed)  # fmt: skip
            jobs.append(Job(ids, q.n, settings, first_choice=i * q.n))
        try:
            ticket = self.s.scheduler.submit(jobs)
        except Busy:
            raise ApiError(503, "the server is busy (its queue is full); retry in a moment",
                           kind="server_busy", code="server_busy",
                           headers={"Retry-After": str(self.s.retry_after)}) from None  # fmt: skip
        rid = openai_api.new_id(chat)
        if q.stream:
            return StreamingResponse(self._stream(request, ticket, q, rid, prompt_tokens),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watch = asyncio.create_task(_cancel_on_disconnect(request, ticket))
        try:
            texts, reasons, completion = [""] * ticket.choices, ["length"] * ticket.choices, 0
            async for event in ticket:
                if event[0] == "text":
                    texts[event[1]] += event[2]
                elif event[0] == "end":
                    reasons[event[1]], completion = event[2], completion + event[3]
                else:
                    raise ApiError(500, event[1], kind="server_error")
        finally:
            watch.cancel()
            ticket.cancel()  # no-op when done; stops the work when this handler is cancelled
        use = openai_api.usage(prompt_tokens, completion)
        return JSONResponse(openai_api.response(q, rid, self.s.model_id, texts, reasons, use))

    async def _stream(self, request: Request, ticket: Ticket, q, rid: str, prompt_tokens: int):
        model, completion, started = self.s.model_id, 0, set()
        watch = asyncio.create_task(_cancel_on_disconnect(request, ticket))

        def sse(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        try:
            async for event in ticket:
                if event[0] == "error":
                    yield sse(ApiError(500, event[1], kind="server_error").body())
                    return
                index = event[1]
                first = q.chat and index not in started
                started.add(index)
                if event[0] == "text":
                    yield sse(openai_api.chunk(q, rid, model, index, event[2], first=first))
                else:
                    completion += event[3]
                    if first:
                        yield sse(openai_api.chunk(q, rid, model, index, "", first=True))
                    yield sse(openai_api.chunk(q, rid, model, index, reason=event[2]))
            if q.include_usage:
                yield sse(openai_api.chunk(q, rid, model, None,
                                           use=openai_api.usage(prompt_tokens, completion)))
            yield "data: [DONE]\n\n"
        finally:
            watch.cancel()
            ticket.cancel()

    async def models(self, request: Request) -> Response:
        self._auth(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        self._auth(request)
        if request.path_params["model"] != self.s.model_id:
            raise ApiError(404, f"The model `{request.path_params['model']}` does not exist",
                           param="model", code="model_not_found")  # fmt: skip
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict:
        return {"id": self.s.model_id, "object": "model", "created": int(self.s.info.get("created", 0)),
                "owned_by": "gpt2easy"}  # fmt: skip

    async def health(self, request: Request) -> Response:
        sched = self.s.scheduler
        busy = sched.busy_since is not None
        return JSONResponse({"status": "ok", "model": self.s.model_id, "waiting": sched.waiting,
                             "queue_limit": sched.max_queue, "generating": busy, "time": time.time()})

    # --- the page -----------------------------------------------------------------------------

    async def page_file(self, request: Request) -> Response:
        name, media = PAGE_FILES[request.url.path]
        data = resources.files("gpt2easy").joinpath("web", name).read_bytes()
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    async def page_info(self, request: Request) -> Response:
        self._auth(request)
        lim = self.s.limits
        return JSONResponse({**self.s.info, "model": self.s.model_id,
                             "metrics": self._metrics_path() is not None,
                             "limits": {"n_ctx": lim.n_ctx, "max_prompt_tokens": lim.max_prompt_tokens,
                                        "max_choices": lim.max_choices}})  # fmt: skip

    def _metrics_path(self) -> Path | None:
        if self.s.run_dir is None:
            return None
        path = self.s.run_dir / metrics.FILENAME
        return path if path.is_file() else None

    async def page_metrics(self, request: Request) -> Response:
        self._auth(request)
        path = self._metrics_path()
        rows = await asyncio.to_thread(metrics.read_metrics, path) if path else []
        return JSONResponse({"rows": metrics.thin(rows, 2000)})


async def _cancel_on_disconnect(request: Request, ticket: Ticket) -> None:
    """Wait for the client to go away (the body is already read), then cancel its request."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            ticket.cancel()
            return

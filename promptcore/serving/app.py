"""The HTTP API (FastAPI) of a prompt server, and the Ray Serve application that batches and scales it.

:class:`PromptService` is one served backbone with its prompts, built from a :class:`ServeConfig`;
:func:`create_app` gives its FastAPI app. Under Ray Serve (:func:`build_application`, :func:`app_builder` for
``serve run`` and Serve config files; ray is imported there only) each replica builds a service and Ray's ``@serve.batch`` gathers concurrent
requests (any mix of prompts) into one backend call; used in-process (tests, ``TestClient``) each HTTP request runs
as one batch.

Endpoints (``docs/serving.md`` shows each with curl and the ``openai`` client):

- ``GET /v1/models``: the served prompts (OpenAI's model list, plus method, task, classes, size).
- ``POST /v1/classify``: top-k classes of images (multipart ``input`` files, or base64 strings in JSON ``input``)
  or texts (JSON ``input``: a string or a list).
- ``POST /v1/completions``, ``POST /v1/chat/completions``: OpenAI-compatible generation with ``model: <prompt
  name>``; ``stream: true`` answers server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.
- ``POST /admin/prompts`` (``{"name": ...}``: a folder of the prompt directory), ``DELETE /admin/prompts/{name}``,
  ``GET /admin/prompts``: hot load and unload, with the admin token.
- ``GET /health`` (no token), ``GET /metrics`` (Prometheus).

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``: 400 malformed input naming the field,
401 token, 404 unknown prompt (naming close matches), 413 over a limit, 503 queue full (with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import MissingFileError, UserError
from .backend import LimitError, Request, ServingBackend, backend_for
from .config import ServeConfig, is_loopback, load_serve_config
from .metrics import ServerMetrics
from .registry import PromptRegistry, UnknownPromptError
from .server import PromptServer, QueueFullError

logger = logging.getLogger(__name__)
DEFAULT_TOP_K = 5
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def api_error(e: Exception, param: str | None = None) -> ApiError:
    """The HTTP form of an error a request caused (a :class:`UserError` and its kinds)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UnknownPromptError):
        return ApiError(404, str(e), param="model", code="model_not_found")
    if isinstance(e, QueueFullError):
        return ApiError(503, str(e), type="server_error", code="overloaded", headers={"Retry-After": str(e.retry_after)})
    if isinstance(e, LimitError):
        return ApiError(413, str(e), param=param, code="limit_exceeded")
    if isinstance(e, MissingFileError):
        return ApiError(404, str(e), param=param, code="not_found")
    return ApiError(400, str(e), param=param)


# ----- the service ---------------------------------------------------------------------------------------------
class LocalEngine:
    """Runs each call as one batch, in a worker thread (in-process use; Ray Serve batches across requests)."""

    def __init__(self, server: PromptServer) -> None:
        self.server = server

    async def classify(self, requests: list[Request]) -> list[Any]:
        return await asyncio.to_thread(self.server.classify, requests)

    async def generate(self, requests: list[Request]) -> AsyncIterator[tuple[int, Any]]:
        steps = self.server.generate_steps(requests)
        while (step := await asyncio.to_thread(next, steps, None)) is not None:
            for i, s in enumerate(step):
                if s is not None:
                    yield i, s


class RayBatchEngine:
    """Ray Serve's ``@serve.batch`` over the server: concurrent requests of any prompts become one backend call."""

    def __init__(self, server: PromptServer, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        from ray import serve

        self.server = server
        batch = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)

        async def classify_batch(requests: list[Request]) -> list[Any]:
            return await asyncio.to_thread(server.classify, requests)

        async def generate_batch(requests: list[Request]) -> AsyncIterator[list[Any]]:
            steps = server.generate_steps(requests)
            while (step := await asyncio.to_thread(next, steps, None)) is not None:
                yield [StopIteration if s is None else s for s in step]  # Ray's "this request is done"

        self._classify_one = batch(classify_batch)
        self._generate_one = batch(generate_batch)

    async def classify(self, requests: list[Request]) -> list[Any]:
        return list(await asyncio.gather(*(self._classify_one(r) for r in requests)))

    async def generate(self, requests: list[Request]) -> AsyncIterator[tuple[int, Any]]:
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, request: Request) -> None:
            try:
                async for step in self._generate_one(request):
                    await queue.put((i, step, None))
            except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
                await queue.put((i, None, e))
            finally:
                await queue.put((i, None, None))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
        try:
            running = len(tasks)
            while running:
                i, step, error = await queue.get()
                if error is not None:
                    raise error
                if step is None:
                    running -= 1
                else:
                    yield i, step
        finally:
            for task in tasks:
                task.cancel()


@dataclass
class PromptService:
    """One served backbone: the config, the server object, the metrics and the engine that batches."""

    config: ServeConfig
    server: PromptServer
    metrics: ServerMetrics
    engine: Any = None
    load_errors: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.engine = self.engine or LocalEngine(self.server)

    @classmethod
    def from_config(cls, config: ServeConfig, builder: Callable[..., ServingBackend] | None = None) -> "PromptService":
        """Builds the backbone (``builder``, default: the registered backend of ``config.kind``), then loads every
        prompt the config names; prompts that fail are reported (``load_errors``, ``GET /health``) and left out.

        Raises:
            UserError: no prompts are configured, or none of them loads.
        """
        import torch

        folders = configured_folders(config)
        builder = builder or backend_for(config.kind)
        backend = builder(config.model, folders, torch.device(config.device), config.limits.backend_limits(), **config.backend_options)
        metrics = ServerMetrics()
        registry = PromptRegistry(backend, config.prompts, config.device_capacity)
        errors: dict[str, str] = {}
        if config.prompts is not None:
            errors.update(registry.load_directory())
        if config.prompt_list is not None:
            errors.update(registry.load_list(config.prompt_list))
        for name, why in errors.items():
            logger.warning("prompt %r is not served: %s", name, why)
        if not len(registry):
            raise UserError("no prompt could be loaded:\n" + "\n".join(f"  - {n}: {why}" for n, why in errors.items()))
        server = PromptServer(backend, registry, config.max_queue, metrics)
        return cls(config, server, metrics, load_errors=errors)


def configured_folders(config: ServeConfig) -> list[Path]:
    """The prompt folders a config names (for the backend builder, which may read its model section from the first).

    Raises:
        UserError: the config names no prompts.
    """
    folders: list[Path] = []
    if config.prompts is not None:
        root = Path(config.prompts)
        if not root.is_dir():
            raise MissingFileError(f"prompts: {str(root)!r} is not a folder; it names a folder of prompt folders")
        folders += sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if config.prompt_list is not None:
        from ..config import read_yaml

        entries = read_yaml(config.prompt_list)
        folders += [Path(config.prompt_list).parent / f for f in entries.values() if isinstance(f, str)] if isinstance(entries, dict) else []
    if not folders:
        raise UserError("no prompts to serve: set 'prompts' (a folder of prompt folders) or 'prompt_list' (a YAML of name: folder)")
    return folders


# ----- request parsing -----------------------------------------------------------------------------------------
def _get(body: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any = ..., what: str = "") -> Any:
    if name not in body or body[name] is None:
        if default is ...:
            raise ApiError(400, f"missing field '{name}'{': ' + what if what else ''}", param=name)
        return default
    value, allowed = body[name], types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):  # JSON true is no number
        raise ApiError(400, f"field '{name}' must be {'/'.join(t.__name__ for t in allowed)}, got {type(value).__name__}", param=name)
    return value


def _int_in(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = _get(body, name, int, default)
    if value is None:
        return None
    if value < low:
        raise ApiError(400, f"field '{name}' must be >= {low}, got {value}", param=name)
    if value > high:
        raise ApiError(413, f"field '{name}' is {value}, over this server's limit of {high}", param=name, code="limit_exceeded")
    return value


def _strings(body: dict[str, Any], name: str, limit: int) -> list[str]:
    value = _get(body, name, (str, list))
    items = [value] if isinstance(value, str) else value
    if not items or not all(isinstance(x, str) for x in items):
        raise ApiError(400, f"field '{name}' must be a string or a non-empty list of strings", param=name)
    if len(items) > limit:
        raise ApiError(413, f"field '{name}' has {len(items)} inputs, over this server's limit of {limit}", param=name, code="limit_exceeded")
    return items


def decode_base64_image(text: str, param: str) -> bytes:
    """Bytes of a base64 image, with or without a ``data:image/...;base64,`` prefix."""
    if text.startswith("data:"):
        _, sep, text = text.partition(",")
        if not sep:
            raise ApiError(400, f"field '{param}': a data URL without ',' before its base64 data", param=param)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"field '{param}' is not valid base64 (send the image file's bytes base64-encoded)", param=param) from None


def _stop(body: dict[str, Any]) -> list[str] | None:
    stop = _get(body, "stop", (str, list), None)
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "field 'stop' must be a string or a list of strings", param="stop")
    return [stop] if isinstance(stop, str) else stop


def generation_params(body: dict[str, Any], config: ServeConfig, chat: bool) -> dict[str, Any]:
    """The OpenAI sampling fields of a completions request, checked (``n``, ``logprobs``, ``echo`` are refused)."""
    limit = config.limits.max_new_tokens
    max_tokens = _int_in(body, "max_completion_tokens", None, 1, limit) if chat else None
    if max_tokens is None:
        max_tokens = _int_in(body, "max_tokens", None if chat else DEFAULT_MAX_TOKENS, 1, limit)
    temperature = float(_get(body, "temperature", (int, float), 1.0))
    top_p = float(_get(body, "top_p", (int, float), 1.0))
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"field 'temperature' must be in [0, 2], got {temperature}", param="temperature")
    if not 0 < top_p <= 1:
        raise ApiError(400, f"field 'top_p' must be in (0, 1], got {top_p}", param="top_p")
    if _get(body, "n", int, 1) != 1:
        raise ApiError(400, "field 'n': this server answers one choice per prompt (n: 1)", param="n")
    for unsupported in ("logprobs", "echo", "tools", "functions", "logit_bias"):
        if body.get(unsupported) not in (None, False, 0):
            raise ApiError(400, f"field '{unsupported}' is not supported by this server", param=unsupported)
    return {
        "max_tokens": max_tokens if max_tokens is not None else limit,
        "temperature": temperature,
        "top_p": top_p,
        "seed": _get(body, "seed", int, None),
        "stop": _stop(body),
    }


def model_card(info: Any, created: int) -> dict[str, Any]:
    return {
        "id": info.name, "object": "model", "created": created, "owned_by": "prompttune",
        "method": info.method, "task": info.task, "operations": list(info.operations), "classes": info.classes,
        "num_parameters": info.num_parameters, "size_bytes": info.nbytes,
    }


# ----- the app -------------------------------------------------------------------------------------------------
def create_app(service: PromptService) -> Any:
    """The FastAPI app of ``service`` (see the module docstring for the endpoints)."""
    config, server, registry = service.config, service.server, service.server.registry
    api_key, admin_key = config.api_key(), config.admin_key()
    admin_open = admin_key is None and is_loopback(config.host)
    created = int(time.time())

    app = FastAPI(title="prompttune prompt server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(ObserveMiddleware, metrics=service.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.limits.max_body_bytes)

    @app.exception_handler(ApiError)
    async def on_api_error(_: HttpRequest, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(UserError)
    async def on_user_error(_: HttpRequest, e: UserError) -> JSONResponse:
        error = api_error(e)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: HttpRequest, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(ApiError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None).body(), status_code=e.status_code)

    def check_token(request: HttpRequest, admin: bool = False) -> None:
        expected = admin_key if admin else api_key
        if admin and expected is None:
            if admin_open:
                return
            raise ApiError(403, f"the admin endpoints are off: set ${config.admin_key_env} to use them on {config.host}", type="permission_error")
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", type="authentication_error", code="invalid_api_key")
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError(401, f"wrong {'admin ' if admin else ''}API key", type="authentication_error", code="invalid_api_key")

    async def json_body(request: HttpRequest) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
        return body

    def prepare(request: HttpRequest, model: str, operation: str, inputs: list[Any], params: dict[str, Any], param: str) -> list[Request]:
        request.state.prompt = model if model in registry else "(unknown)"
        request.state.operation = operation
        try:
            return [server.prepare(model, operation, x, params) for x in inputs]
        except UserError as e:  # an error that begins with a parameter's name ("temperature: ...") is that field's
            named = str(e).split(":", 1)[0]
            raise api_error(e, None if isinstance(e, UnknownPromptError) else named if named in params else param) from None

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "prompts": len(registry), "failed": dict(registry.errors)})

    @app.get("/metrics")
    async def metrics(request: HttpRequest) -> Response:
        check_token(request)
        data, content_type = service.metrics.exposition()
        return Response(data, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: HttpRequest) -> dict[str, Any]:
        check_token(request)
        cards = []
        for name in registry.names():
            try:
                cards.append(model_card(registry.get(name).info, created))
            except UnknownPromptError:  # removed while listing
                continue
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: HttpRequest) -> dict[str, Any]:
        check_token(request)
        return model_card(registry.get(name).info, created)

    @app.post("/v1/classify")
    async def classify(request: HttpRequest) -> dict[str, Any]:
        check_token(request)
        limit = config.limits.max_inputs
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=limit, max_fields=limit + 8)
            fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
            files = [v for v in form.getlist("input") if isinstance(v, UploadFile)]
            texts = [v for v in form.getlist("input") if isinstance(v, str)]
            inputs: list[Any] = [await f.read() for f in files] + texts
            if not inputs:
                raise ApiError(400, "missing field 'input': attach the image file(s) as 'input' (curl -F input=@cat.png)", param="input")
            body: dict[str, Any] = {"model": fields.get("model")}
            if "top_k" in fields:
                try:
                    body["top_k"] = int(fields["top_k"])
                except ValueError:
                    raise ApiError(400, f"field 'top_k' must be an integer, got {fields['top_k']!r}", param="top_k") from None
        else:
            body = await json_body(request)
            inputs = _strings(body, "input", limit)
            if server.backend.kind == "vision":
                inputs = [decode_base64_image(x, "input") for x in inputs]
        model_name = _get(body, "model", str, what="the name of a served prompt (GET /v1/models)")
        top_k = _int_in(body, "top_k", min(DEFAULT_TOP_K, config.limits.max_top_k), 1, config.limits.max_top_k)
        requests = prepare(request, model_name, "classify", inputs, {"top_k": top_k}, "input")
        with server.admitted(len(requests)):
            results = await service.engine.classify(requests)
        return {
            "object": "list", "model": model_name,
            "data": [
                {"index": i, "labels": [{"label": l, "score": s, "class_index": c} for l, s, c in zip(r.labels, r.scores, r.indices)]}
                for i, r in enumerate(results)
            ],
        }

    async def completion(request: HttpRequest, chat: bool) -> Any:
        check_token(request)
        body = await json_body(request)
        model_name = _get(body, "model", str, what="the name of a served prompt (GET /v1/models)")
        params = generation_params(body, config, chat)
        if chat:
            messages = _get(body, "messages", list)
            if not messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), (str, list)) for m in messages):
                raise ApiError(400, "field 'messages' must be a non-empty list of {\"role\": str, \"content\": str or a list of content parts}", param="messages")
            inputs: list[Any] = [[{"role": m["role"], "content": m["content"]} for m in messages]]
        else:
            inputs = _strings(body, "prompt", config.limits.max_inputs)
        requests = prepare(request, model_name, "generate", inputs, params, "messages" if chat else "prompt")
        stream = _get(body, "stream", bool, False)
        include_usage = bool(_get(body, "stream_options", dict, {}).get("include_usage"))
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        now = int(time.time())
        admission = server.admitted(len(requests))
        admission.__enter__()
        release = _Once(lambda: admission.__exit__(None, None, None))
        if stream:
            return StreamingResponse(
                _sse(service.engine.generate(requests), requests, ident, now, model_name, chat, include_usage, release),
                media_type="text/event-stream", background=BackgroundTask(release),
            )
        try:
            texts = [""] * len(requests)
            tokens = [0] * len(requests)
            reasons: list[str] = ["length"] * len(requests)
            async for i, step in service.engine.generate(requests):
                texts[i] += step.text
                tokens[i] += len(step.token_ids)
                reasons[i] = step.finish_reason or reasons[i]
        finally:
            release()
        usage = _usage(requests, tokens)
        if chat:
            choices = [{"index": 0, "message": {"role": "assistant", "content": texts[0]}, "finish_reason": reasons[0], "logprobs": None}]
            return {"id": ident, "object": "chat.completion", "created": now, "model": model_name, "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "finish_reason": r, "logprobs": None} for i, (t, r) in enumerate(zip(texts, reasons))]
        return {"id": ident, "object": "text_completion", "created": now, "model": model_name, "choices": choices, "usage": usage}

    @app.post("/v1/completions")
    async def completions(request: HttpRequest) -> Any:
        return await completion(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HttpRequest) -> Any:
        return await completion(request, chat=True)

    @app.get("/admin/prompts")
    async def admin_list(request: HttpRequest) -> dict[str, Any]:
        check_token(request, admin=True)
        return {"served": registry.names(), "device": registry.resident(), "failed": dict(registry.errors)}

    @app.post("/admin/prompts")
    async def admin_load(request: HttpRequest) -> JSONResponse:
        check_token(request, admin=True)
        body = await json_body(request)
        name = _get(body, "name", str, what="a prompt folder inside the server's prompt directory")
        replace = _get(body, "replace", bool, False)
        try:
            prompt = await asyncio.to_thread(registry.add, name, None, replace)
        except UserError as e:
            raise api_error(e, "name") from None
        return JSONResponse(model_card(prompt.info, int(time.time())), status_code=201)

    @app.delete("/admin/prompts/{name}")
    async def admin_unload(name: str, request: HttpRequest) -> dict[str, Any]:
        check_token(request, admin=True)
        registry.remove(name)
        return {"id": name, "object": "model", "deleted": True}

    return app


class _Once:
    """Calls ``fn`` the first time it is called, never again (a stream's release runs from two places)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn: Callable[[], Any] | None = fn

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


def _usage(requests: list[Request], completion_tokens: list[int]) -> dict[str, int]:
    prompt_tokens = sum(r.num_input_tokens for r in requests)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": sum(completion_tokens), "total_tokens": prompt_tokens + sum(completion_tokens)}


async def _sse(steps: AsyncIterator[tuple[int, Any]], requests: list[Request], ident: str, created: int, model: str,
               chat: bool, include_usage: bool, release: Callable[[], None]) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    tokens = [0] * len(requests)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + json.dumps({"id": ident, "object": kind, "created": created, "model": model, "choices": choices, **extra}) + "\n\n"

    try:
        if chat:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}])
        async for i, step in steps:
            tokens[i] += len(step.token_ids)
            if chat:
                delta = {"content": step.text} if step.text else {}
                yield chunk([{"index": 0, "delta": delta, "finish_reason": step.finish_reason, "logprobs": None}])
            else:
                yield chunk([{"index": i, "text": step.text, "finish_reason": step.finish_reason, "logprobs": None}])
        if include_usage:
            yield chunk([], usage=_usage(requests, tokens))
        yield "data: [DONE]\n\n"
    except Exception as e:  # noqa: BLE001 - the status is sent already: the error goes in the stream
        logger.exception("stream %s failed", ident)
        yield "data: " + json.dumps(ApiError(500, f"generation failed: {e}", type="server_error").body()) + "\n\n"
    finally:
        release()


class BodyLimitMiddleware:
    """Answers 413 to a request body over ``max_bytes`` (announced or streamed), before it is read whole."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = ApiError(413, f"the request body is over this server's limit of {self.max_bytes} bytes", code="limit_exceeded")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, error.status, error.body())
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise error
            return message

        await self.app(scope, limited, send)


class ObserveMiddleware:
    """Records each API request's latency (to its last byte) and status, by prompt and operation."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def observed(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            state = scope.get("state") or {}
            self.metrics.observe_request(state.get("prompt", "(unknown)"), state.get("operation", scope["path"]), status, time.perf_counter() - start)


async def _send_json(send: Callable, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# ----- Ray Serve -----------------------------------------------------------------------------------------------
def build_application(config: ServeConfig, builder: Callable[..., ServingBackend] | None = None) -> Any:
    """The Ray Serve application of ``config``: ``num_replicas`` replicas, each a :class:`PromptService` whose
    classify and generate calls go through ``@serve.batch``. Run it with ``serve.run(app)``."""
    from ray import serve

    from ..config import to_dict

    config.check_exposure()
    # replicas may start in another working directory: they get the prompt paths absolute
    config = replace(
        config, **{k: str(Path(getattr(config, k)).resolve()) for k in ("prompts", "prompt_list") if getattr(config, k) is not None}
    )

    @serve.ingress()
    class PromptDeployment:
        def __init__(self, config_dict: dict[str, Any], builder: Callable[..., ServingBackend] | None) -> None:
            cfg = load_serve_config(config_dict)
            self.service = PromptService.from_config(cfg, builder)
            self.service.engine = RayBatchEngine(self.service.server, cfg.max_batch_size, cfg.batch_wait_timeout_s)

        def __serve_build_asgi_app__(self) -> Any:
            return create_app(self.service)

        def __del__(self) -> None:  # Ray stops routing first, then lets admitted requests finish
            service = getattr(self, "service", None)
            if service is not None:
                service.server.close(service.config.graceful_shutdown_timeout_s)

    deployment = serve.deployment(
        PromptDeployment,
        name="prompttune",
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_queue,
        max_queued_requests=config.max_queue,
        graceful_shutdown_timeout_s=config.graceful_shutdown_timeout_s,
        graceful_shutdown_wait_loop_s=0.5,
    )
    return deployment.bind(to_dict(config), builder)


def app_builder(args: dict[str, Any]) -> Any:
    """``serve run promptcore.serving.app:app_builder config=serve.yaml [key=value ...]``: the application of the serve
    config file ``config``, its fields overridden by the other arguments (``max_batch_size=64``)."""
    args = dict(args)
    source = args.pop("config", None)
    return build_application(load_serve_config(source, [f"{k}={v}" for k, v in args.items()]))


__all__ = ["ApiError", "PromptService", "app_builder", "build_application", "create_app"]

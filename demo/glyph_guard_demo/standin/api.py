"""The stand-in's vLLM-shaped API process: OpenAI endpoints, /health, /metrics, admin faults."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from glyph_guard_demo.standin import faults, protocol
from glyph_guard_demo.standin.engine_client import (
    Completion,
    ControlError,
    EngineClient,
    EngineDead,
    EngineStartError,
    RequestFailed,
    ShuttingDown,
)
from glyph_guard_demo.standin.leak import MIB, MemoryHog
from glyph_guard_demo.standin.metrics import VllmMetrics
from glyph_guard_demo.standin.names import MODEL_NAME, STAND_IN_NOTICE
from glyph_guard_demo.standin.openai_shapes import (
    ApiError,
    ChatRequest,
    chunk,
    completion_body,
    error_body,
    now,
    parse_request,
    sse,
    usage,
)
from glyph_guard_demo.standin.serving import Lifecycle, PortInUse, bind, loopback_client, say, serve

ENGINE_DEATH_EXIT_DELAY = 5.0  # like vLLM's watchdog: the API exits this long after the engine
# ... or this long after a request met the dead engine (current vLLM: 0.6 s measured)
MET_DEAD_EXIT_DELAY = 0.5
KEEP_ALIVE_ENV = "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH"
Generation = Literal["0.10", "current"]
VLLM_VERSIONS: dict[str, str] = {"0.10": "0.10.2", "current": "0.32.0"}
# /health on a dead engine: 0.10 answered 500, current vLLM 503 (EngineDeadError); a request
# on a dead engine gets 500 from both
DEAD_HEALTH_STATUS: dict[str, int] = {"0.10": 500, "current": 503}
DEAD_REQUEST_STATUS = 500
# the API's exit code after the engine died: 0.10's watchdog failed; current vLLM exits cleanly
ENGINE_DEATH_EXIT_CODE: dict[str, int] = {"0.10": 1, "current": 0}


@dataclass(frozen=True)
class ApiOptions:
    """Everything `glyph-standin api` was started with."""

    host: str = "127.0.0.1"
    port: int = 5002
    pages_dir: Path = Path("/tmp/glyph-standin-pages")
    log_level: str = "info"
    vllm_generation: Generation = "current"
    keep_alive_on_engine_death: bool = False
    orphan_engine_on_crash: bool = False
    startup_delay: float = 0.0
    fail_start_after: float | None = None
    hang: bool = False
    slow_seconds: float = 0.0
    rss_leak_mb_per_request: float = 0.0
    rss_leak_mb_per_minute: float = 0.0
    leak_in: str = "engine"
    gpu_memory_mb: float = 0.0
    gpu_leak_mb_per_request: float = 0.0
    engine_death_after: float | None = None
    crash_after: float | None = None
    step_seconds: float = 0.02
    slow_prefill_seconds: float = 0.0
    server_load_tracking: bool = False

    def engine_config(self) -> protocol.EngineConfig:
        in_engine = self.leak_in == "engine"
        return protocol.EngineConfig(
            pages_dir=str(self.pages_dir),
            startup_delay=self.startup_delay,
            hang=self.hang,
            slow_seconds=self.slow_seconds,
            rss_mb_per_request=self.rss_leak_mb_per_request if in_engine else 0.0,
            rss_mb_per_minute=self.rss_leak_mb_per_minute if in_engine else 0.0,
            gpu_memory_mb=self.gpu_memory_mb,
            gpu_leak_mb_per_request=self.gpu_leak_mb_per_request,
            orphan_on_parent_death=self.orphan_engine_on_crash,
            death_after_seconds=self.engine_death_after,
            step_seconds=self.step_seconds,
            slow_prefill_seconds=self.slow_prefill_seconds,
        )


def keep_alive_from_env() -> bool:
    return os.environ.get(KEEP_ALIVE_ENV, "").strip().lower() in {"1", "true", "yes"}


def crash() -> None:
    """The crash fault: exit at once, non-zero, without stopping the engine or flushing."""
    say(f"glyph-standin api: crashing on purpose (exit {faults.CRASH_EXIT_CODE})")
    os._exit(faults.CRASH_EXIT_CODE)


class ApiState:
    """What the handlers share: the engine, the API-side leak, metrics and options."""

    def __init__(self, options: ApiOptions, engine: EngineClient) -> None:
        self.options = options
        self.engine = engine
        self.keep_alive = options.keep_alive_on_engine_death or keep_alive_from_env()
        self.hog = MemoryHog()
        if options.leak_in == "api":
            self.hog.configure(options.rss_leak_mb_per_request, options.rss_leak_mb_per_minute)
        self.sleep_level = 0  # 0 awake; 1 weights offloaded; 2 everything discarded
        self.awake = asyncio.Event()
        self.awake.set()
        self.held = 0  # requests the API holds (GET /load with --enable-server-load-tracking)
        self.metrics = VllmMetrics(
            waiting=lambda: engine.count("waiting"),
            running=lambda: engine.count("running"),
            sleep_level=lambda: self.sleep_level,
        )
        engine.on_step = self.metrics.step
        self.started = now()
        self.met_dead = asyncio.Event()  # a request met the dead engine: the API exits sooner

    def dead(self, what: str) -> ApiError:
        """The error a request on the dead engine gets (it hastens the API's exit)."""
        self.met_dead.set()
        return ApiError(DEAD_REQUEST_STATUS, f"EngineCore is dead{what} [stand-in]")


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


def build_app(state: ApiState) -> FastAPI:
    """The HTTP surface of the stand-in API process."""
    app = FastAPI(
        title="Glyph stand-in API (vLLM-shaped)",
        description=STAND_IN_NOTICE,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _add_error_handlers(app)
    _add_server_routes(app, state)
    _add_completions(app, state)
    _add_sleep_routes(app, state)
    _add_admin_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, str(exc.errors()[:1]))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def _add_server_routes(app: FastAPI, state: ApiState) -> None:
    """/health, /version, /v1/models, /metrics."""
    engine = state.engine

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        if engine.alive:
            return Response(status_code=200, headers={"x-glyph-standin": "1"})
        status = DEAD_HEALTH_STATUS[state.options.vllm_generation]
        return _error(status, f"EngineCore is dead (exit code {engine.exit_code}) [stand-in]")

    @app.api_route("/version", methods=["GET", "HEAD"])
    async def version() -> dict[str, str]:
        return {"version": f"{VLLM_VERSIONS[state.options.vllm_generation]} (glyph-standin)"}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": MODEL_NAME,
                    "object": "model",
                    "created": state.started,
                    "owned_by": "glyph-standin",
                    "root": "zai-org/Glyph (stand-in: no weights, no GPU)",
                    "parent": None,
                    "max_model_len": 8192,
                    "stand_in": True,
                }
            ],
        }

    if state.options.server_load_tracking:

        @app.get("/load")
        async def load() -> dict[str, int]:
            return {"server_load": state.held}

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def _add_completions(app: FastAPI, state: ApiState) -> None:
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = parse_request(await request.body())
        if not state.engine.alive:
            raise state.dead("; cannot serve requests")
        if state.sleep_level and state.options.vllm_generation == "0.10":
            raise ApiError(503, "the engine is sleeping; POST /wake_up first [stand-in]")
        if body.stream:
            return StreamingResponse(_stream(state, body), media_type="text/event-stream")
        started = time.monotonic()
        result = await _complete(state, body)
        state.metrics.finished(
            result.prompt_tokens,
            len(result.tokens),
            result.finish_reason,
            time.monotonic() - started,
        )
        return JSONResponse(
            completion_body(
                request_id=f"chatcmpl-{uuid.uuid4().hex}",
                created=now(),
                text=result.text,
                finish=result.finish_reason,
                prompt=result.prompt_tokens,
                completion=len(result.tokens),
                pages=result.pages,
            )
        )


def _add_sleep_routes(app: FastAPI, state: ApiState) -> None:
    """vLLM's sleep mode: a sleeping engine keeps /health 200 and refuses requests."""

    @app.post("/sleep")
    async def sleep(level: int = Query(default=1, ge=1, le=2)) -> Response:
        state.sleep_level = level
        state.awake.clear()
        return Response(status_code=200)

    @app.post("/wake_up")
    async def wake_up() -> Response:
        state.sleep_level = 0
        state.awake.set()
        return Response(status_code=200)

    @app.get("/is_sleeping")
    async def is_sleeping() -> dict[str, bool]:
        return {"is_sleeping": state.sleep_level > 0}


def _add_admin_routes(app: FastAPI, state: ApiState) -> None:
    @app.post("/admin/fault")
    async def admin_fault(request: Request) -> JSONResponse:
        _require_loopback(request)
        try:
            fault = faults.API_FAULTS.validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ApiError(400, f"bad fault: {first['loc']}: {first['msg']}") from None
        return JSONResponse(await _apply(state, fault), status_code=202)

    @app.get("/admin/faults")
    async def admin_faults(request: Request) -> dict[str, Any]:
        _require_loopback(request)
        return await _describe(state)


def _require_loopback(request: Request) -> None:
    if not loopback_client(request.client.host if request.client else None):
        raise ApiError(403, "admin endpoints answer loopback clients only")


async def _complete(state: ApiState, body: ChatRequest) -> Completion:
    state.held += 1
    try:
        await state.awake.wait()  # a sleeping engine keeps the request until /wake_up
        result = await state.engine.complete(body.text(), body.token_limit, body.ignore_eos)
    except ShuttingDown:
        raise ApiError(503, "the server is shutting down") from None
    except EngineDead as exc:
        raise state.dead(f": {exc}") from None
    except RequestFailed as exc:
        raise ApiError(500, f"the engine failed this request: {exc}") from None
    finally:
        state.held -= 1
    state.hog.on_request()
    return result


async def _stream(state: ApiState, body: ChatRequest) -> AsyncIterator[bytes]:
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", now()
    started = time.monotonic()
    try:
        result = await _complete(state, body)
    except ApiError as exc:
        yield sse(error_body(exc.status, exc.message))
        yield sse("[DONE]")
        return
    yield sse(chunk(request_id, created, {"role": "assistant", "content": ""}))
    for token in result.tokens:
        yield sse(chunk(request_id, created, {"content": token}))
    yield sse(
        chunk(
            request_id,
            created,
            {},
            result.finish_reason,
            glyph_standin={"stand_in": True, "pages": result.pages},
        )
    )
    if body.stream_options is not None and body.stream_options.include_usage:
        final = chunk(
            request_id, created, {}, usage=usage(result.prompt_tokens, len(result.tokens))
        )
        final["choices"] = []
        yield sse(final)
    state.metrics.finished(
        result.prompt_tokens, len(result.tokens), result.finish_reason, time.monotonic() - started
    )
    yield sse("[DONE]")


async def _apply(state: ApiState, fault: faults.ApiFault) -> dict[str, Any]:
    engine = state.engine
    if isinstance(fault, faults.Crash):
        if fault.orphan_engine is not None and engine.alive:
            await _control(engine, {"fault": "orphan", "enabled": fault.orphan_engine})
        asyncio.get_running_loop().call_later(0.1, crash)
        return {"accepted": "crash", "exit_code": faults.CRASH_EXIT_CODE}
    if isinstance(fault, faults.RssLeak) and fault.where == "api":
        state.hog.configure(fault.mb_per_request, fault.mb_per_minute)
        return {"accepted": "rss_leak", **await _describe(state)}
    if not engine.alive:
        raise ApiError(409, "the engine process is dead; only 'crash' still applies")
    if isinstance(fault, faults.EngineDeath):
        await engine.control(fault.model_dump(), wait=False)
        return {"accepted": "engine_death", "engine_pid": engine.pid}
    if isinstance(fault, faults.Clear):
        state.hog.configure(0.0, 0.0)
    engine_state = await _control(engine, fault.model_dump())
    return {"accepted": fault.fault, "engine": engine_state}


async def _control(engine: EngineClient, fault: dict[str, Any]) -> dict[str, Any]:
    try:
        return await engine.control(fault)
    except ControlError as exc:
        raise ApiError(409, str(exc)) from None
    except (EngineDead, asyncio.TimeoutError) as exc:
        raise ApiError(409, f"the engine did not take the fault: {exc or 'timeout'}") from None


async def _describe(state: ApiState) -> dict[str, Any]:
    engine = state.engine
    engine_info: dict[str, Any] = {"pid": engine.pid, "alive": engine.alive}
    if engine.alive:
        with contextlib.suppress(ApiError):
            engine_info.update(await _control(engine, {"fault": "status"}))
    else:
        engine_info["exit_code"] = engine.exit_code
    return {
        "stand_in": True,
        "api": {
            "pid": os.getpid(),
            "vllm_generation": state.options.vllm_generation,
            "keep_alive_on_engine_death": state.keep_alive,
            "sleep_level": state.sleep_level,
            "rss_leak": {
                "where": "api",
                "mb_per_request": state.hog.mb_per_request,
                "mb_per_minute": state.hog.mb_per_minute,
                "held_mb": round(state.hog.held_bytes / MIB, 1),
            },
        },
        "engine": engine_info,
        "requests": {"waiting": engine.count("waiting"), "running": engine.count("running")},
    }


async def _watch_engine(state: ApiState, lifecycle: Lifecycle) -> None:
    """vLLM's watchdog: when the engine dies, /health turns 500 (0.10) or 503 (current) and
    the API exits ~5 s later (sooner once a request met the dead engine), with code 1 (0.10)
    or 0 (current), unless VLLM_KEEP_ALIVE_ON_ENGINE_DEATH keeps it answering."""
    code = await state.engine.wait_exit()
    if lifecycle.stopping.is_set():
        return
    say(f"ERROR: EngineCore (pid {state.engine.pid}) died with exit code {code}")
    if state.keep_alive:
        say(f"glyph-standin api: staying up without an engine ({KEEP_ALIVE_ENV})")
        return
    say(f"glyph-standin api: shutting down within {ENGINE_DEATH_EXIT_DELAY:g} s")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(state.met_dead.wait(), ENGINE_DEATH_EXIT_DELAY)
        await asyncio.sleep(MET_DEAD_EXIT_DELAY)
    lifecycle.stop(ENGINE_DEATH_EXIT_CODE[state.options.vllm_generation])


async def _crash_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    crash()


async def _main(options: ApiOptions) -> int:
    lifecycle = Lifecycle()
    lifecycle.install_signals()
    try:
        sock = bind(options.host, options.port)
    except PortInUse as exc:
        say(f"ERROR: glyph-standin api cannot listen: {exc}")
        return 1
    try:
        options.pages_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sock.close()
        say(f"ERROR: cannot create the pages directory {options.pages_dir}: {exc}")
        return 1
    engine = EngineClient(options.engine_config())
    tasks: list[asyncio.Task[None]] = []
    try:
        await engine.start()
        failer = lifecycle.fail_after(options.fail_start_after, "glyph-standin api")
        tasks.extend([failer] if failer else [])
        try:
            loaded, _ = await lifecycle.unless_stopped(engine.wait_ready())
        except EngineStartError as exc:
            say(f"ERROR: the engine failed to start: {exc}")
            return exc.code
        if not loaded:
            return lifecycle.exit_code
        state = ApiState(options, engine)
        tasks.append(asyncio.create_task(_watch_engine(state, lifecycle)))
        if options.crash_after is not None:
            tasks.append(asyncio.create_task(_crash_after(options.crash_after)))
        print(
            f"{STAND_IN_NOTICE}\n"
            f"api: pid {os.getpid()}, engine pid {engine.pid}, "
            f"http://{options.host}:{options.port}",
            flush=True,
        )

        def on_stop() -> None:
            engine.fail_all(ShuttingDown("the server is shutting down"))

        try:
            await serve(build_app(state), sock, lifecycle, options.log_level, on_stop)
        except PortInUse as exc:
            say(f"ERROR: glyph-standin api cannot listen: {exc}")
            return 1
        state.hog.stop()
        return lifecycle.exit_code
    finally:
        for task in tasks:
            task.cancel()
        sock.close()
        await engine.stop()


def run_api(options: ApiOptions) -> int:
    """Run the API process until it is stopped; returns the exit code."""
    return asyncio.run(_main(options))

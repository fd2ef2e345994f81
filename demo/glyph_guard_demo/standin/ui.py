"""The stand-in's Gradio-shaped UI: /config, a page, a predict endpoint that fills a cache dir."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from glyph_guard_demo.standin import faults
from glyph_guard_demo.standin.names import MODEL_NAME, STAND_IN_NOTICE
from glyph_guard_demo.standin.openai_shapes import ApiError, error_body
from glyph_guard_demo.standin.serving import Lifecycle, PortInUse, bind, loopback_client, say, serve

GRADIO_VERSION = "4.44.1"
PREDICT_PATHS = ("/gradio_api/predict", "/api/predict")
_GROWTH_TICK_SECONDS = 0.5


def default_cache_dir() -> Path:
    """Like Gradio: $GRADIO_TEMP_DIR, else a fixed directory under /tmp."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or "/tmp/gradio-standin")


@dataclass(frozen=True)
class UiOptions:
    """Everything `glyph-standin ui` was started with."""

    host: str = "127.0.0.1"
    port: int = 7860
    api_url: str = "http://127.0.0.1:5002"
    cache_dir: Path = Path("/tmp/gradio-standin")
    request_timeout: float = 1200.0
    log_level: str = "info"
    startup_delay: float = 0.0
    fail_start_after: float | None = None
    slow_seconds: float = 0.0
    cache_growth_kb_per_minute: float = 0.0


class CacheGrower:
    """The cache-growth fault: writes files into the cache directory at a steady rate."""

    def __init__(self, cache_dir: Path) -> None:
        self.directory = cache_dir / "standin-growth"
        self.kb_per_minute = 0.0
        self.written_bytes = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def configure(self, kb_per_minute: float) -> None:
        self.kb_per_minute = max(0.0, kb_per_minute)
        if self.kb_per_minute > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._grow, name="cache-growth", daemon=True)
            self._thread.start()

    def _grow(self) -> None:
        last, owed, count = time.monotonic(), 0.0, 0
        while not self._stop.wait(_GROWTH_TICK_SECONDS):
            now = time.monotonic()
            owed += self.kb_per_minute * 1024 * (now - last) / 60.0
            last = now
            size = int(owed)
            if size <= 0:
                continue
            count += 1
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                (self.directory / f"{time.time_ns()}-{count}.bin").write_bytes(b"\x5a" * size)
            except OSError as exc:
                say(f"glyph-standin ui: cache growth write failed: {exc}")
                continue
            owed -= size
            self.written_bytes += size

    def stop(self) -> None:
        self._stop.set()


class UiState:
    """What the handlers share."""

    def __init__(self, options: UiOptions) -> None:
        self.options = options
        self.slow_seconds = options.slow_seconds
        self.grower = CacheGrower(options.cache_dir)
        self.grower.configure(options.cache_growth_kb_per_minute)
        self.client = httpx.AsyncClient(timeout=options.request_timeout)


def copy_to_cache(pages: list[str], cache_dir: Path) -> list[str]:
    """Copy each rendered page into cache_dir/<sha256 of its bytes>/, as Gradio does."""
    copied: list[str] = []
    for page in pages:
        source = Path(page)
        if source.suffix != ".png" or not source.is_file():
            continue
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        target = cache_dir / digest / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(str(target))
    return copied


async def ask_api(state: UiState, text: str) -> tuple[str, list[str]]:
    """Stream a completion from the api component, as the Glyph demo does; (text, pages)."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
    }
    url = state.options.api_url.rstrip("/") + "/v1/chat/completions"
    answer: list[str] = []
    pages: list[str] = []
    async with state.client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise ApiError(502, f"the api answered {response.status_code}: {response.text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if "error" in event:
                raise ApiError(502, f"the api failed: {event['error'].get('message')}")
            for choice in event.get("choices", []):
                answer.append(choice.get("delta", {}).get("content") or "")
            pages.extend(event.get("glyph_standin", {}).get("pages", []))
    return "".join(answer), pages


_PAGE = """<!doctype html>
<html><head><title>Glyph (stand-in)</title></head>
<body><h1>Glyph stand-in UI</h1>
<p>{notice}. POST {{"data": ["your text"]}} to <code>{predict}</code>.</p>
</body></html>
"""


def build_app(state: UiState) -> FastAPI:
    """The HTTP surface of the stand-in UI process."""
    app = FastAPI(
        title="Glyph stand-in UI (Gradio-shaped)",
        description=STAND_IN_NOTICE,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _add_error_handlers(app)
    _add_gradio_routes(app)
    _add_predict(app, state)
    _add_admin_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.param), exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), 500)


def _add_gradio_routes(app: FastAPI) -> None:
    """The page and /config, which answers whenever Gradio is up."""

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index() -> str:
        return _PAGE.format(notice=STAND_IN_NOTICE, predict=PREDICT_PATHS[0])

    @app.api_route("/config", methods=["GET", "HEAD"])
    async def config() -> dict[str, Any]:
        return {
            "version": f"{GRADIO_VERSION}-standin",
            "mode": "blocks",
            "title": "Glyph (stand-in)",
            "stand_in": True,
            "protocol": "sse_v3",
            "components": [
                {"id": 1, "type": "textbox", "props": {"label": "Text"}},
                {"id": 2, "type": "gallery", "props": {"label": "Rendered pages"}},
            ],
            "dependencies": [{"id": 0, "api_name": "predict", "inputs": [1], "outputs": [2]}],
        }


def _add_predict(app: FastAPI, state: UiState) -> None:
    options = state.options

    async def predict(request: Request) -> JSONResponse:
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], str):
            raise ApiError(400, 'expected {"data": ["text"]}', "data")
        started = time.monotonic()
        if state.slow_seconds:
            await asyncio.sleep(state.slow_seconds)
        try:
            answer, pages = await ask_api(state, items[0])
        except httpx.TimeoutException:
            raise ApiError(504, "the api did not answer in time") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise ApiError(502, f"cannot reach the api at {options.api_url}: {exc}") from None
        cached = await asyncio.to_thread(copy_to_cache, pages, options.cache_dir)
        return JSONResponse(
            {
                "data": [answer, cached],
                "is_generating": False,
                "duration": time.monotonic() - started,
                "stand_in": True,
            }
        )

    for path in PREDICT_PATHS:
        app.add_api_route(path, predict, methods=["POST"])


def _add_admin_routes(app: FastAPI, state: UiState) -> None:
    @app.post("/admin/fault")
    async def admin_fault(request: Request) -> JSONResponse:
        _require_loopback(request)
        try:
            fault = faults.UI_FAULTS.validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ApiError(400, f"bad fault: {first['loc']}: {first['msg']}") from None
        if isinstance(fault, faults.Crash):
            asyncio.get_running_loop().call_later(0.1, _crash)
        elif isinstance(fault, faults.Slow):
            state.slow_seconds = fault.seconds
        elif isinstance(fault, faults.CacheGrowth):
            state.grower.configure(fault.kb_per_minute)
        else:
            state.slow_seconds = 0.0
            state.grower.configure(0.0)
        return JSONResponse({"accepted": fault.fault, **_describe(state)}, status_code=202)

    @app.get("/admin/faults")
    async def admin_faults(request: Request) -> dict[str, Any]:
        _require_loopback(request)
        return _describe(state)


def _describe(state: UiState) -> dict[str, Any]:
    return {
        "stand_in": True,
        "pid": os.getpid(),
        "cache_dir": str(state.options.cache_dir),
        "slow_seconds": state.slow_seconds,
        "cache_growth": {
            "kb_per_minute": state.grower.kb_per_minute,
            "written_bytes": state.grower.written_bytes,
        },
    }


def _require_loopback(request: Request) -> None:
    if not loopback_client(request.client.host if request.client else None):
        raise ApiError(403, "admin endpoints answer loopback clients only")


def _crash() -> None:
    say(f"glyph-standin ui: crashing on purpose (exit {faults.CRASH_EXIT_CODE})")
    os._exit(faults.CRASH_EXIT_CODE)


async def _main(options: UiOptions) -> int:
    lifecycle = Lifecycle()
    lifecycle.install_signals()
    port = options.port
    try:
        sock = bind(options.host, port)
    except PortInUse:
        say(f"OSError: Cannot find empty port in range: {port}-{port}. (glyph-standin ui)")
        return 1
    failer = lifecycle.fail_after(options.fail_start_after, "glyph-standin ui")
    state: UiState | None = None
    try:
        if options.startup_delay:
            say(f"glyph-standin ui: starting (stand-in: sleeping {options.startup_delay} s)")
            started, _ = await lifecycle.unless_stopped(asyncio.sleep(options.startup_delay))
            if not started:
                return lifecycle.exit_code
        try:
            options.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            say(f"ERROR: cannot create the cache directory {options.cache_dir}: {exc}")
            return 1
        state = UiState(options)
        print(
            f"{STAND_IN_NOTICE}\nui: pid {os.getpid()}, http://{options.host}:{port}, "
            f"cache {options.cache_dir}",
            flush=True,
        )
        try:
            await serve(build_app(state), sock, lifecycle, options.log_level)
        except PortInUse:
            say(f"OSError: Cannot find empty port in range: {port}-{port}. (glyph-standin ui)")
            return 1
        return lifecycle.exit_code
    finally:
        if failer is not None:
            failer.cancel()
        sock.close()
        if state is not None:
            state.grower.stop()
            await state.client.aclose()


def run_ui(options: UiOptions) -> int:
    """Run the UI process until it is stopped; returns the exit code."""
    return asyncio.run(_main(options))

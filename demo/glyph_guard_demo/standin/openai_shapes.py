"""OpenAI-compatible chat-completion requests, responses, stream chunks and error bodies."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glyph_guard_demo.standin.names import MODEL_NAME


class ApiError(Exception):
    """An error answered as an OpenAI error body with this HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


_ERROR_TYPES = {
    400: "BadRequestError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    409: "ConflictError",
    413: "RequestTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """{"error": {message, type, param, code}} as the OpenAI API answers errors."""
    kind = _ERROR_TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Message(_Open):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(
            str(part.get("text", "")) for part in self.content if part.get("type") == "text"
        )


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extra sampling parameter: generate up to max_tokens

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def text(self) -> str:
        return "\n\n".join(message.text() for message in self.messages if message.role != "system")


def parse_request(body: bytes) -> ChatRequest:
    """Validate a request body; ApiError (400/404) names what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param) from None
    if request.model != MODEL_NAME:
        raise ApiError(404, f"The model `{request.model}` does not exist.", "model")
    return request


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    *,
    request_id: str,
    created: int,
    text: str,
    finish: str,
    prompt: int,
    completion: int,
    pages: list[str],
) -> dict[str, Any]:
    """A non-streaming chat.completion; `glyph_standin` carries the rendered pages' paths."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": MODEL_NAME,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(prompt, completion),
        "glyph_standin": {"stand_in": True, "pages": pages},
    }


def chunk(
    request_id: str,
    created: int,
    delta: dict[str, Any],
    finish: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One chat.completion.chunk."""
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_NAME,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event line pair."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def now() -> int:
    return int(time.time())

"""The names the stand-in goes by: served model, engine process label, stand-in notice."""

from __future__ import annotations

MODEL_NAME = "glyph"
STAND_IN_NOTICE = "glyph-standin: a stand-in for the Glyph service, not the real model"
ENGINE_TITLE = "glyph-standin-engine"
WORKER_TITLE = "glyph-standin-worker"  # the engine's child, like vLLM's VLLM::Worker
ENGINE_INDEX = "0"  # vLLM's `engine` label: the data-parallel engine's index

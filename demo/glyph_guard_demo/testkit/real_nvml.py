"""The real NVML for `gpu`-marked tests: the module and its GPU count, or the test skipped."""

from __future__ import annotations

from typing import Any

import pytest

from glyph_guard.common.nvml import load_pynvml


def real_nvml_or_skip() -> tuple[Any, int]:
    """pynvml with a working driver and how many GPUs it sees (one or more); skips the test
    otherwise."""
    module = load_pynvml()
    if module is None:
        pytest.skip("nvidia-ml-py is not installed")
    try:
        module.nvmlInit()
        count = int(module.nvmlDeviceGetCount())
        module.nvmlShutdown()
    except module.NVMLError as exc:
        pytest.skip(f"no usable NVIDIA driver here: {exc}")
    if count == 0:
        pytest.skip("NVML sees no GPU")
    return module, count

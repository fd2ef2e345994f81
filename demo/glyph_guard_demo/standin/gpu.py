"""Real GPU memory held and leaked through torch or cupy, imported only when asked for."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

MIB = 1024 * 1024
NEEDS_GPU = "--gpu-memory-mb and --gpu-leak-mb-per-request need torch or cupy and a CUDA GPU"


class GpuUnavailable(Exception):
    """No usable GPU backend; the message says what is missing."""


def backend_installed() -> str | None:
    """The name of an installed GPU array library, without importing it."""
    for name in ("torch", "cupy"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


class GpuHog:
    """Device memory held on purpose (like model weights) and leaked per request."""

    def __init__(self) -> None:
        self._alloc: Any = None
        self._blocks: list[Any] = []
        self.held_bytes = 0
        self.backend = ""

    def open(self) -> None:
        """Import torch or cupy and check for a device; raise GpuUnavailable otherwise."""
        if self._alloc is not None:
            return
        name = backend_installed()
        if name is None:
            raise GpuUnavailable(f"{NEEDS_GPU}: neither is installed")
        try:
            module = importlib.import_module(name)
            if name == "torch":
                if not module.cuda.is_available():
                    raise GpuUnavailable(f"{NEEDS_GPU}: torch sees no CUDA device")
                torch = module

                def alloc_torch(size: int) -> Any:
                    return torch.ones(size, dtype=torch.uint8, device="cuda")

                self._alloc = alloc_torch
            else:
                if module.cuda.runtime.getDeviceCount() < 1:
                    raise GpuUnavailable(f"{NEEDS_GPU}: cupy sees no CUDA device")
                cupy = module

                def alloc_cupy(size: int) -> Any:
                    return cupy.ones(size, dtype=cupy.uint8)

                self._alloc = alloc_cupy
        except GpuUnavailable:
            raise
        except Exception as exc:  # any import or driver error means "no GPU here"
            raise GpuUnavailable(f"{NEEDS_GPU}: {name} failed: {exc}") from None
        self.backend = name

    def allocate(self, megabytes: float) -> None:
        """Allocate and fill this much device memory and keep it."""
        size = int(megabytes * MIB)
        if size <= 0:
            return
        self.open()
        try:
            self._blocks.append(self._alloc(size))
        except Exception as exc:  # out of memory is a report, not a crash of the engine
            raise GpuUnavailable(f"could not allocate {megabytes} MB on the GPU: {exc}") from None
        self.held_bytes += size

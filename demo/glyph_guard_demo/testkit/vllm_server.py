"""A real vLLM (its CPU build, in .venv-vllm) serving a tiny model built offline, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from glyph_guard_demo.testkit.support import REPO, free_port

VLLM_VERSION = "0.32.0"
VENV = Path(os.environ.get("VLLM_VENV", REPO / ".venv-vllm"))
INSTALL_SCRIPT = REPO / "scripts" / "install_vllm.sh"
MODEL_DIR = VENV / "tiny-model"
MODEL_NAME = "glyph"
START_TIMEOUT = 600.0  # 20-45 s on a quiet machine; minutes on a shared, busy one

ENV = {
    "VLLM_HOST_IP": "127.0.0.1",  # else its message queue binds the first non-loopback address
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "PYTHONUNBUFFERED": "1",
}
FLAGS = ("--dtype", "float32", "--max-model-len", "512", "--enforce-eager")


class VllmUnavailable(RuntimeError):
    """vLLM's CPU build could not be installed or the tiny model could not be built."""


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_installed() -> Path:
    """Install vLLM into its own venv once (scripts/install_vllm.sh keeps a stamp)."""
    done = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        cwd=REPO,
        env={**os.environ, "VLLM_VENV": str(VENV)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise VllmUnavailable(
            f"{INSTALL_SCRIPT} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    return python()


_BUILD_MODEL = r"""
import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = Path(sys.argv[1])
text = [
    "Glyph renders long text into pages of images and reads them back with a vision model.",
    "The guard watches the engine, the API and the user interface, and restarts what broke.",
    "A hung engine keeps its health check green while no token comes out of it.",
    "Hello! How are you today? I am fine, thank you. What is the weather like?",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000; punctuation: , . ; : ! ? ( ) [ ] { }",
] * 20
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
special = ["<s>", "</s>", "<pad>"]
trainer = trainers.BpeTrainer(
    vocab_size=512,
    special_tokens=special,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
)
tokenizer.train_from_iterator(text, trainer)
template = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)
fast = PreTrainedTokenizerFast(
    tokenizer_object=tokenizer,
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<pad>",
    chat_template=template,
)
fast.model_max_length = 512
fast.save_pretrained(out)
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    bos_token_id=fast.bos_token_id,
    eos_token_id=fast.eos_token_id,
    pad_token_id=fast.pad_token_id,
    torch_dtype="float32",
)
LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
(out / "READY").write_text("tiny random-weight Llama for glyph-guard's tests\n")
"""


def ensure_model() -> Path:
    """Build the tiny model once (offline: transformers and tokenizers, no download)."""
    if (MODEL_DIR / "READY").exists():
        return MODEL_DIR
    building = MODEL_DIR.with_name(f"{MODEL_DIR.name}.building-{os.getpid()}")
    done = subprocess.run(
        [str(ensure_installed()), "-c", _BUILD_MODEL, str(building)],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise VllmUnavailable(f"building the tiny model failed:\n{done.stderr[-4000:]}")
    with suppress(OSError):  # another process may have finished first
        building.rename(MODEL_DIR)
    if not (MODEL_DIR / "READY").exists():
        raise VllmUnavailable(f"the tiny model is missing from {MODEL_DIR}")
    return MODEL_DIR


def serve_argv(port: int, *extra: str, model: Path | None = None) -> list[str]:
    """`vllm serve` of the tiny model on a loopback port, with the flags the CPU build needs."""
    return [
        str(VENV / "bin" / "vllm"),
        "serve",
        str(model or MODEL_DIR),
        "--served-model-name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *FLAGS,
        *extra,
    ]


@dataclass
class VllmServer:
    """A `vllm serve` started by a test, in its own process group and session."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exited(self) -> int | None:
        code: int | None = self.proc.poll()
        return code

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited() is not None:
                raise AssertionError(f"vllm exited with {self.exited()}:\n{self.output()[-6000:]}")
            with suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.25)
        raise AssertionError(f"vllm not healthy within {timeout} s:\n{self.output()[-6000:]}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it (orphans keep the group)."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(self.pid):
            self.proc.poll()
            time.sleep(0.1)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    drop = {"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "VLLM_SERVER_DEV_MODE"}
    env = {k: v for k, v in os.environ.items() if k not in drop and k != "VIRTUAL_ENV"}
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return {**env, **ENV, **(extra or {})}


@contextmanager
def vllm_server(
    log_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> Iterator[VllmServer]:
    """Start `vllm serve` of the tiny model on a free loopback port; stop its group at exit."""
    model = ensure_model()
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"vllm-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            serve_argv(port, *extra, model=model),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log_dir,
            env=environment(env),
        )
    server = VllmServer(proc, port, log)
    try:
        if wait:
            server.wait_healthy()
        yield server
    finally:
        server.stop()


def vllm_component(work: Path, port: int, *extra: str) -> dict[str, Any]:
    """A deployment's `api` component: the real vLLM (CPU build) serving the tiny model on a
    loopback port, matched by its port, restarted with the same argv, environment and log
    file that glyph-stack uses for its first start."""
    return {
        "match": {"cmdline": rf"(^|/)vllm serve .*--port {port}(\s|$)"},
        "port": port,
        "probes": [
            {"name": "health", "path": "/health"},
            {"name": "models", "path": "/v1/models"},
            {
                "name": "canary",
                "kind": "canary",
                "path": "/v1/chat/completions",
                "timeout_seconds": 5,
            },
        ],
        "engine": {"path": "/metrics"},
        "remediation": {
            "actions": ["restart"],
            "restart": {
                "backend": "command",
                "start": serve_argv(port, "--enable-server-load-tracking", *extra),
                "env": {**ENV, "PATH": environment()["PATH"]},
                "cwd": str(work),
                "log_file": str(work / "logs" / "vllm-api.log"),
            },
            "stop_grace_seconds": 10,
            "startup_timeout_seconds": START_TIMEOUT,
        },
    }

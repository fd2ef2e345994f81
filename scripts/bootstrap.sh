#!/usr/bin/env bash
# Installs what glyph-guard needs on a fresh Debian machine: a virtualenv with the package and
# its demo extra (the stand-in Glyph and glyph-stack, demo/pyproject.toml), with --test its
# test tools too, plus Prometheus, Alertmanager and promtool from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=".[demo]"
if [ "${1:-}" = "--test" ]; then extras=".[demo,test]"; fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Strict editable installs: pyproject.toml maps the top-level folders into glyph_guard, and the
# strict mode's link tree (build/__editable__.*) is what Python and mypy import. The link tree
# lists files, so a new or removed module means a new install: the stamp covers the file list.
sources=$(find common exporter remediator fleet deploy demo/glyph_guard_demo -type f \
    -not -path '*/__pycache__/*' | LC_ALL=C sort)
stamp=".venv/.installed-$(printf '%s\n' "$(cat pyproject.toml demo/pyproject.toml)" "$sources" \
    | sha256sum | cut -c1-16)-${extras//[^a-z]/}"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
    rm -rf build/__editable__.* demo/build/__editable__.*
    .venv/bin/python -m pip install --quiet --no-build-isolation \
        --config-settings editable_mode=strict --editable "$extras" --editable ./demo
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# The `vllm` tier's engine: vLLM's CPU build in its own virtualenv (.venv-vllm; its torch and
# pins never touch .venv). The tier's session fixture runs it too; a stamp makes it quick.
if [ "${1:-}" = "--test" ]; then bash scripts/install_vllm.sh; fi

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
{ command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null; } \
    || missing+=(prometheus-alertmanager)
# The tests check the systemd units with systemd-analyze.
if [ "${1:-}" = "--test" ]; then command -v systemd-analyze >/dev/null || missing+=(systemd); fi
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=(sudo -n)
    fi
    # Keep the packages' own services from starting: the tests and the demo start their own
    # instances on loopback with free ports.
    policy=/usr/sbin/policy-rc.d
    created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        created_policy=yes
    fi
    echo "bootstrap: installing ${missing[*]} from Debian" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if [ -n "$created_policy" ]; then "${sudo[@]}" rm -f "$policy"; fi
fi

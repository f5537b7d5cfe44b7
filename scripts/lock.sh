#!/usr/bin/env bash
# The lock: requirements/lock.txt pins every transitive dependency of pyproject.toml (all extras) with hashes.
# pyproject.toml keeps ranges (the package is a library too); the lock is the exact set every install uses.
#
#   scripts/lock.sh              re-compile after editing pyproject.toml (keeps every pin that still fits)
#   scripts/lock.sh --upgrade    move every pin to the newest release pyproject.toml allows (then: make test)
#   scripts/lock.sh --check      fail when the lock is not what pyproject.toml resolves to (CI), and check that
#                                the GPU machine's set (Python 3.12, torch 2.11) still resolves
#
# torch is resolved from the CPU build (requirements/torch-cpu.txt) and left out of the lock: the README commands
# install it first with pip, which on this project's machines takes the CPU wheel lying on disk (TORCH_WHEELS,
# default /opt/wheels). Where no such folder exists, PyTorch's CPU index is used. uv comes from the lock itself.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
LOCK=requirements/lock.txt
TORCH=requirements/torch-cpu.txt
WHEELS=${TORCH_WHEELS:-/opt/wheels}
if [ -d "$WHEELS" ]; then torch_source=(--find-links "$WHEELS")
else torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match); fi
compile() {  # compile <output> [extra uv args]
  local out=$1; shift
  "$UV" pip compile pyproject.toml --all-extras --constraint "$TORCH" "${torch_source[@]}" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
    --no-emit-package torch --custom-compile-command "scripts/lock.sh" --quiet --output-file "$out" "$@"
}
case "${1:-}" in
  "") compile "$LOCK" ;;
  --upgrade) compile "$LOCK" --upgrade ;;
  --check)
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    cp "$LOCK" "$tmp/lock.txt"
    compile "$tmp/lock.txt"
    if ! diff -u "$LOCK" "$tmp/lock.txt"; then
      echo "error: $LOCK is not what pyproject.toml resolves to; run scripts/lock.sh, then make test" >&2; exit 1
    fi
    echo "torch==2.11.0" > "$tmp/gpu.txt"
    "$UV" pip compile pyproject.toml --all-extras --constraint "$tmp/gpu.txt" --python-version 3.12 \
      --python-platform x86_64-manylinux_2_28 --quiet --output-file "$tmp/gpu-lock.txt"
    echo "lock is current ($(grep -c '^[a-z0-9]' "$LOCK") packages); Python 3.12 + torch 2.11 resolves"
    ;;
  *) echo "usage: scripts/lock.sh [--upgrade | --check]" >&2; exit 2 ;;
esac

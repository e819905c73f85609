#!/usr/bin/env bash
# Install the peer library for scripts/bench_peer_deepctr.py (DeepCTR-Torch 0.2.9) OUTSIDE the repository.
#
# Idempotent: installs `deepctr-torch==0.2.9` with --no-deps into a cache dir (default
# ${XDG_CACHE_HOME:-~/.cache}/dist_ctr_peer) using the project's .venv pip, and prints that dir on stdout.
# --no-deps: its requirements (torch, sklearn, tqdm, requests) are already in .venv; it must never pull another
# torch, nor tensorflow (the bench installs a tiny stand-in for the `tensorflow.python.keras.callbacks` import).
# Nothing of DeepCTR-Torch is copied into the repository; the bench only imports it from this dir.
#
# Usage:  PEER_DIR=$(scripts/peer_env.sh)    # then: .venv/bin/python scripts/bench_peer_deepctr.py --peer-dir "$PEER_DIR"
set -euo pipefail
cd "$(dirname "$0")/.."
PEER_VERSION=0.2.9
PEER_DIR=${DIST_CTR_PEER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dist_ctr_peer}
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || { echo "[peer_env] $PY not found: run scripts/setup_env.sh (make test) first" >&2; exit 1; }
STAMP="$PEER_DIR/.peer-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "deepctr-torch==$PEER_VERSION" && -d "$PEER_DIR/deepctr_torch" ]]; then
  echo "$PEER_DIR"
  exit 0
fi
mkdir -p "$PEER_DIR"
echo "[peer_env] installing deepctr-torch==$PEER_VERSION (no deps) into $PEER_DIR" >&2
"$PY" -m pip install --disable-pip-version-check -q --no-deps --upgrade --target "$PEER_DIR" \
  "deepctr-torch==$PEER_VERSION" >&2
[[ -f "$PEER_DIR/deepctr_torch/models/basemodel.py" ]] || { echo "[peer_env] install failed" >&2; exit 1; }
echo "deepctr-torch==$PEER_VERSION" > "$STAMP"
echo "$PEER_DIR"

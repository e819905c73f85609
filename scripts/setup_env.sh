#!/usr/bin/env bash
# Create / update .venv with dist_ctr's pinned stack. Idempotent: a stamp holds the hash of every pin file and
# of pyproject.toml, so a second run with nothing to do returns in well under a second.
#   CPU machine : torch==$TORCH_VERSION (CPU wheel) + fbgemm-gpu-cpu
#   CUDA machine: the same torch version (CUDA build) + fbgemm-gpu          (override with DIST_CTR_DEVICE=cpu|cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
source requirements/torch.env
DEVICE=${DIST_CTR_DEVICE:-$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}
STAMP="$VENV/.setup-stamp"
WANT=$(cat requirements/*.txt requirements/torch.env pyproject.toml | sha256sum | cut -c1-16)-$DEVICE
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
  exit 0
fi
echo "[setup] creating / updating $VENV for $DEVICE (torch $TORCH_VERSION, torchrec $TORCHREC_VERSION)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install --disable-pip-version-check -q"
$PIP "torch==$TORCH_VERSION"
if [[ "$DEVICE" == cuda ]]; then FBGEMM="fbgemm-gpu==$FBGEMM_VERSION"; else FBGEMM="fbgemm-gpu-cpu==$FBGEMM_VERSION"; fi
$PIP --no-deps "torchrec==$TORCHREC_VERSION" "$FBGEMM"
$PIP -r requirements/base.txt -r requirements/test.txt
$PIP --no-deps -e .
"$VENV/bin/python" -c "import torchrec, fbgemm_gpu, dist_ctr" || { echo "[setup] import check failed"; exit 1; }
echo "$WANT" > "$STAMP"
echo "[setup] done"

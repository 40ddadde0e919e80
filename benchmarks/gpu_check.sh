#!/usr/bin/env bash
# What only a GPU shows, in one run of at most ~8 minutes on one CUDA GPU (docs/training.md, "On a GPU"):
#   1. the CUDA-marked tests (tests/test_cuda.py: AMP choice on the real card, CPU/GPU agreement, a trainer run);
#   2. every engine for 200 steps under fp32, bf16 and fp16 (finite losses and weights, img/s, peak memory);
#   3. stylegan2_ada at 128 px, batch 32: img/s and s/kimg beside the reference's ~13 s/kimg (one V100);
#   4. on a machine with 2+ GPUs: torchrun data parallelism (NCCL), stylegan2_ada at 128 px with 32 images per GPU on
#      1, 2, 4, ... GPUs: img/s per GPU and the scaling efficiency (benchmarks/ddp_scaling.py).
# Usage: bash benchmarks/gpu_check.sh   (PY=... to choose the interpreter; TORCH_HOME for the FID/VGG weights)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -z "${TORCH_HOME:-}" ] && [ -d ../shared/torch-home ]; then export TORCH_HOME="$(cd ../shared/torch-home && pwd)"; fi
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" \
  || { echo "no CUDA device (or no torch with CUDA): nothing to check" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
status=0
echo "== 1. CUDA tests"
timeout 180 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider || status=1
echo "== 2. every engine under each precision (200 steps, 64 px)"
timeout 240 "$PY" benchmarks/gpu_check.py --steps 200 || status=1
echo "== 3. stylegan2_ada throughput"
timeout 90 "$PY" benchmarks/gpu_check.py --throughput || status=1
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
echo "== 4. data parallel training (torchrun, NCCL): $gpus GPU(s)"
if [ "${gpus:-0}" -ge 2 ]; then
  timeout 420 "$PY" benchmarks/ddp_scaling.py --device cuda --steps 8 --epochs 2 --check || status=1
else
  echo "one GPU: skipped (needs 2 or more)"
fi
exit $status

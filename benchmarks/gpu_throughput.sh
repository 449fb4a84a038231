#!/usr/bin/env bash
# GPU training throughput, run in one call on a lent GPU machine that has JAX but no TensorFlow
# (see docs/benchmarks.md). Needs, in the repo root and ignored by git: .whl/ with the wheels of
# keras, namex, optree and platformdirs for that machine's Python, and .devdata/ with
# cifar-10-python-subset.tar.gz. CONFIGS="model precision,..." and EPOCHS pick the runs.
# Writes its log to $OUT/gpu_throughput.log when OUT is set.
set -uo pipefail
log="${OUT:-/tmp}/gpu_throughput.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export RESNETCTL_DATA_DIR=/tmp/resnetctl-data RESNETCTL_RUNS_DIR=/tmp/resnetctl-runs
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())"
  python3 -m resnetctl prepare cifar10 --source .devdata/cifar-10-python-subset.tar.gz --val-split 0
  IFS=, read -ra configs <<< "${CONFIGS:-resnet20 float32,resnet20 mixed_bfloat16,resnet56 float32,resnet56 mixed_bfloat16}"
  for config in "${configs[@]}"; do
    set -- $config
    python3 benchmarks/train_throughput.py --model "$1" --dataset cifar10 --precision "$2" \
        --epochs "${EPOCHS:-5}" --rounds 1 --no-origin
  done
} 2>&1 | tee "$log"

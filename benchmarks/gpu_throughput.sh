#!/usr/bin/env bash
# Every row of issue #22's goals in one call on a lent GPU machine (JAX, no TensorFlow there, no
# network), in under 10 minutes of device time; see docs/benchmarks.md.
#
#   bash benchmarks/gpu_throughput.sh                       # the GPU run (log: $OUT/gpu_throughput.log)
#   GPU_BENCH_SMALL=1 bash benchmarks/gpu_throughput.sh     # the same steps, tiny, to check it runs (CPU)
#
# Needs, in the repo root and ignored by git, where the machine lacks them: .whl/ with the wheels
# of keras, namex, optree and platformdirs for that machine's Python (installed into /tmp/site).
# The data is generated here: a CIFAR-10-format archive of 50,000 random images (the speed of a
# full epoch; accuracy means nothing). Rows, each one invocation of train_throughput.py that
# compares `resnetctl train` with a bare `model.fit` of the same compiled model:
#   resnet56 and resnet20, float32 and mixed_bfloat16, batch 128, lr 0.1;
#   resnet56, mixed_bfloat16, batch 512, lr 0.4 (the linear scaling rule): the stretch row;
# and, after the two resnet56 rows, a kernel profile of resnet56 float32 against bf16
# (benchmarks/kernel_profile.py). Every step gets at most what is left of BUDGET seconds (540),
# so the whole call stays under 10 minutes; JAX's compilation cache lets the second side of a row
# reuse the first side's compiled step. Knobs: IMAGES, EPOCHS (2: the first, compiling, is
# dropped), ROWS ("model precision batch lr;..."), ROW_TIMEOUT, BUDGET, PROFILE (0: skip), PYTHON.
set -uo pipefail
out="${OUT:-/tmp}"
log="$out/gpu_throughput.log"
py="${PYTHON:-python3}"
if [ "${GPU_BENCH_SMALL:-0}" = 1 ]; then
  images="${IMAGES:-512}" epochs="${EPOCHS:-2}" row_timeout="${ROW_TIMEOUT:-900}" budget="${BUDGET:-3000}"
  rows="${ROWS:-resnet8 float32 32 0.1;resnet8 mixed_bfloat16 64 0.2}" profile_model=resnet8 profile_batch=16
else
  images="${IMAGES:-50000}" epochs="${EPOCHS:-2}" row_timeout="${ROW_TIMEOUT:-200}" budget="${BUDGET:-540}"
  rows="${ROWS:-resnet56 float32 128 0.1;resnet56 mixed_bfloat16 128 0.1;resnet20 float32 128 0.1;resnet20 mixed_bfloat16 128 0.1;resnet56 mixed_bfloat16 512 0.4}"
  profile_model=resnet56 profile_batch=128
fi
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
limit() { local l; l=$(left); echo $((l < $1 ? l : $1)); }
if [ -d .whl ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD/src"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
work="$(mktemp -d /tmp/resnetctl-gpu-bench-XXXXXX)"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export JAX_COMPILATION_CACHE_DIR="$work/jax-cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export RESNETCTL_DATA_DIR="$work/data" RESNETCTL_RUNS_DIR="$work/runs"
{
  date -u +"start %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$py" -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())"
  git log -1 --format="code %h %s" 2>/dev/null || true
  "$py" benchmarks/random_cifar.py "$work/random.tar.gz" --train "$images" --test 100 &&
  "$py" -m resnetctl prepare cifar10 --source "$work/random.tar.gz" --val-split 0 --name random || exit 1
  IFS=';' read -ra all <<< "$rows"
  n=0
  for row in "${all[@]}"; do
    set -- $row
    n=$((n + 1))
    if [ "$(limit "$row_timeout")" -lt 30 ]; then echo "=== row skipped, budget spent: $row"; continue; fi
    echo "=== row: $1 $2 batch $3 lr $4 ($(date -u +%H:%M:%S), $(left) s of the budget left)"
    timeout "$(limit "$row_timeout")" "$py" benchmarks/train_throughput.py --model "$1" --dataset random \
        --precision "$2" --batch-size "$3" --lr "$4" --epochs "$epochs" --rounds 1 --no-origin \
        --sides train,bare || echo "=== row failed or timed out (rc $?)"
    if [ "$n" = 2 ] && [ "${PROFILE:-1}" = 1 ] && [ "$(left)" -ge 60 ]; then
      echo "=== kernel profile ($(date -u +%H:%M:%S))"
      timeout "$(limit 80)" "$py" benchmarks/kernel_profile.py --model "$profile_model" \
          --batch-size "$profile_batch" --steps 20 || echo "=== profile failed or timed out (rc $?)"
    fi
  done
  date -u +"end %Y-%m-%dT%H:%M:%SZ"
} 2>&1 | tee "$log"
rm -rf "$work"

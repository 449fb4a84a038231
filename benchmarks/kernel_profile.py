"""Where a train step's time goes on the device, float32 against mixed_bfloat16 (JAX).

    KERAS_BACKEND=jax python benchmarks/kernel_profile.py [--model resnet56] [--batch-size 128] [--steps 20]

Compiles the model as ``train`` does, warms up, then records ``--steps`` steps with
``jax.profiler.trace(create_perfetto_trace=True)`` and sums the device kernels of the trace by
kind: convolutions (cuDNN / cuBLAS), fused elementwise and reduction kernels (XLA fusions,
batch norm and ReLU live here), dtype conversions outside fusions, copies and transposes, and
the rest. Prints the totals per step and the 12 costliest kernels of each precision: the profile
that says why bf16 does or does not pay. Needs only JAX (no TensorBoard plugin); on a CPU it runs,
but the host's "kernels" say little.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from resnetctl.models import create_model_for  # noqa: E402
from resnetctl.training.config import TrainConfig  # noqa: E402
from resnetctl.training.trainer import compile_model, make_schedule  # noqa: E402

KINDS = (
    ("convolution", ("conv", "cudnn", "gemm", "cutlass", "sm90", "sm80", "xmma", "implicit", "wgrad", "dgrad")),
    ("conversion", ("convert",)),
    ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
    ("fusion (elementwise, reductions, BN)", ("fusion", "loop_", "input_", "reduce", "triton")),
)


class Info:  # the few DatasetInfo fields create_model_for reads
    def __init__(self, size: int, classes: int):
        self.image_size, self.num_classes = size, classes
        self.mean, self.std = [127.5] * 3, [64.0] * 3


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(n in lowered for n in needles):
            return kind
    return "other"


def device_events(trace_dir: Path) -> list[dict]:
    """Complete events of the device (GPU) threads of the perfetto trace; all of them on a CPU."""
    (path,) = list(trace_dir.rglob("perfetto_trace.json.gz"))
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {
        e["pid"]: e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    gpu = {pid for pid, name in names.items() if "gpu" in name.lower() or "/device:" in name.lower()}
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    on_device = [e for e in complete if e["pid"] in gpu]
    return on_device or complete


def profile(model_name: str, precision: str, batch: int, steps: int) -> tuple[dict, list]:
    keras.mixed_precision.set_dtype_policy(precision)
    config = TrainConfig(model=model_name, precision=precision, batch_size=batch, epochs=1, steps_per_execution=1)
    model = create_model_for(model_name, Info(32, 10), weight_decay=5e-4, seed=0)
    compile_model(model, config, make_schedule(config, steps), 10)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, batch * steps).astype(np.int32)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile and warm up
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            jax.effects_barrier()
        events = device_events(Path(tmp))
    by_kind, by_name = collections.Counter(), collections.Counter()
    for e in events:
        by_kind[kind_of(e["name"])] += e["dur"] / steps  # microseconds per step
        by_name[e["name"]] += e["dur"] / steps
    by_kind["total"] = sum(v for k, v in by_kind.items())
    by_kind["kernels per step"] = len(events) / steps
    return by_kind, by_name.most_common(12)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps traced on {jax.devices()[0]}")
    results = {p: profile(args.model, p, args.batch_size, args.steps) for p in ("float32", "mixed_bfloat16")}
    kinds = sorted(set().union(*(r[0] for r in results.values())))
    print(f"{'microseconds per step':44s}{'float32':>12s}{'bfloat16':>12s}")
    for kind in kinds:
        print(f"{kind:44s}" + "".join(f"{results[p][0].get(kind, 0):12.0f}" for p in results))
    for precision, (_, top) in results.items():
        print(f"costliest kernels, {precision} (microseconds per step):")
        for name, micros in top:
            print(f"  {micros:10.0f}  {name[:110]}")


if __name__ == "__main__":
    main()

"""What a train step computes in each dtype, from the program JAX traces (no GPU needed).

    KERAS_BACKEND=jax python benchmarks/precision_profile.py [--model resnet56] [--batch-size 128]

For float32 and mixed_bfloat16, traces ``train``'s compiled train step (the project's model,
loss and optimizer, compiled as ``train`` compiles them) and counts, per dtype, the convolutions
and their FLOPs, the dtype conversions and the elements they convert, and the elementwise and
reduction work on activation-sized arrays. It explains a speed difference as far as the program
goes; the time each kernel takes on a given GPU needs a profile on that GPU.
"""

from __future__ import annotations

import argparse
import collections
import math
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from resnetctl.models import create_model_for  # noqa: E402
from resnetctl.training.config import TrainConfig  # noqa: E402
from resnetctl.training.trainer import compile_model, make_schedule  # noqa: E402


class Info:  # the few DatasetInfo fields create_model_for reads
    def __init__(self, size: int, classes: int):
        self.image_size, self.num_classes = size, classes
        self.mean, self.std = [127.5] * 3, [64.0] * 3


def equations(jaxpr):
    """Every equation, nested jaxprs (pjit, custom_vjp, while) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                yield from equations(inner)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    inner = getattr(v, "jaxpr", v)
                    if hasattr(inner, "eqns"):
                        yield from equations(inner)


def profile(model_name: str, precision: str, batch: int, size: int, classes: int) -> dict:
    keras.mixed_precision.set_dtype_policy(precision)
    config = TrainConfig(model=model_name, precision=precision, batch_size=batch, epochs=1)
    model = create_model_for(model_name, Info(size, classes), weight_decay=5e-4, seed=0)
    compile_model(model, config, make_schedule(config, 10), classes)
    x = np.zeros((batch, size, size, 3), np.uint8)
    y = np.zeros((batch,), np.int32)
    model.fit(x[:2], y[:2], batch_size=2, epochs=1, verbose=0)  # builds optimizer and metrics
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    closed = jax.make_jaxpr(model.train_step)(state, (x, y, None))
    counts = collections.Counter()
    big = batch * 4 * 4 * 16  # "activation-sized": at least this many elements
    for eqn in equations(closed.jaxpr):
        name = eqn.primitive.name
        out = eqn.outvars[0].aval if eqn.outvars else None
        dtype = str(getattr(out, "dtype", "-"))
        elements = math.prod(getattr(out, "shape", ()) or (1,))
        if name == "conv_general_dilated":
            lhs, rhs = (v.aval for v in eqn.invars[:2])
            flops = 2 * elements * math.prod(rhs.shape[:-1]) if rhs.shape[-1] == out.shape[-1] else 0
            counts[f"conv {lhs.dtype}"] += 1
            counts[f"conv GFLOP {lhs.dtype}"] += flops / 1e9
        elif name == "convert_element_type":
            source = str(eqn.invars[0].aval.dtype)
            if elements >= big:
                counts[f"convert {source}->{dtype} (activation-sized)"] += 1
                counts[f"converted M elements {source}->{dtype}"] += elements / 1e6
            else:
                counts["convert (small: weights, scalars)"] += 1
        elif elements >= big and name not in ("broadcast_in_dim", "reshape"):
            counts[f"other activation-sized ops in {dtype}"] += 1
            counts[f"M elements written in {dtype}"] += elements / 1e6
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    results = {
        p: profile(args.model, p, args.batch_size, args.image_size, args.classes) for p in ("float32", "mixed_bfloat16")
    }
    keys = sorted(set().union(*results.values()))
    print(f"{args.model}, batch {args.batch_size}, one traced train step (forward + backward + update)")
    print(f"{'':58s}{'float32':>14s}{'mixed_bfloat16':>16s}")
    for key in keys:
        print(
            f"{key:58s}"
            + "".join(f"{results[p].get(key, 0):>{w}.1f}" for p, w in (("float32", 14), ("mixed_bfloat16", 16)))
        )


if __name__ == "__main__":
    main()

"""Where a run trains: one device, every local device, or several hosts.

The one module that tells backends apart. We write no distribution of our own:

- TensorFlow: ``tf.distribute.MirroredStrategy`` over the local GPUs (the logical CPU devices
  when there is no GPU) and ``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``.
- JAX: ``keras.distribution.DataParallel`` over the local devices, and over the devices of
  several processes (hosts) after ``keras.distribution.initialize`` (``jax.distributed.initialize``)
  configured by Keras' own ``KERAS_DISTRIBUTION_*`` variables (:data:`JAX_CLUSTER_VARIABLES`).
- PyTorch: one device; Keras 3 has no data-parallel training for it.

``--batch-size`` is always the global batch, split over the replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras

from resnetctl.errors import RunError
from resnetctl.training.config import STRATEGIES, check_strategy  # noqa: F401 (STRATEGIES re-exported)

DOCS = "docs/distributed.md"


@dataclass
class Placement:
    """A resolved ``--strategy``: what to build, load, compile and fit under (``scope``)."""

    strategy: str  # none | mirrored | multi-worker
    backend: str
    replicas: int = 1
    devices: list[str] = field(default_factory=list)
    worker: int = 0
    workers: int = 1
    chief: bool = True
    # every batch must split evenly over the devices (JAX DataParallel); 1 = any size
    batch_multiple: int = 1
    _scope: object = None
    note: str = ""

    def scope(self):
        return self._scope() if self._scope else contextlib.nullcontext()

    @property
    def saves_in_background(self) -> bool:
        """Whether checkpoints may be saved by a twin on a writer thread: on one device only. On
        several, the twin's work on a device thread can starve the replicas' collective (seen on
        JAX's CPU devices: an all-reduce waited for its second participant until XLA aborted)."""
        return self.strategy == "none"

    def describe(self) -> str:
        if self.strategy == "none":
            text = f"one device ({self.backend})"
        else:
            kind = {
                "tensorflow": {"mirrored": "MirroredStrategy", "multi-worker": "MultiWorkerMirroredStrategy"},
                "jax": {
                    "mirrored": "keras.distribution.DataParallel",
                    "multi-worker": "keras.distribution.DataParallel",
                },
            }[self.backend][self.strategy]
            where = f", worker {self.worker} of {self.workers}" if self.workers > 1 else ""
            text = f"{self.replicas} replicas, {kind}{where} ({', '.join(_short(d) for d in self.devices)})"
        return text + (f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "backend": self.backend,
            "replicas": self.replicas,
            "workers": self.workers,
            "devices": self.devices,
        }

    @property
    def shard(self) -> tuple[int, int]:
        """(this process, processes) for input pipelines that feed a share of each global batch:
        JAX across processes assembles the global batch from every process's local part
        (``jax.make_array_from_process_local_data``). TensorFlow's strategies split the global
        batch themselves, so there every process reads it whole: ``(0, 1)``."""
        if self.backend == "jax" and self.workers > 1:
            return self.worker, self.workers
        return 0, 1

    @property
    def data_on_device(self) -> bool:
        """In-memory splits live in the accelerator's memory (JAX on one device): batches are
        gathered there, with no host-to-device copy per step. Data-parallel JAX places each batch
        over the devices itself (``keras.distribution``), so it is fed from the host."""
        return self.backend == "jax" and self.strategy == "none"

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < self.replicas or batch_size % self.batch_multiple:
            raise RunError(
                f"--batch-size {batch_size} does not split over {self.replicas} replicas",
                hint=f"use a multiple of {max(self.batch_multiple, self.replicas)}: the batch size is global",
            )

    @contextlib.contextmanager
    def output(self, path: Path):
        """The folder this process writes a run into: the chief writes the real one, other
        workers a scratch folder that is thrown away (they take part in every step but own no files)."""
        if self.chief:
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="resnetctl-worker-") as tmp:
            scratch = Path(tmp) / path.name
            scratch.mkdir()
            yield scratch


def _short(device: str) -> str:
    return device.rsplit("device:", 1)[-1] if "device:" in device else device


def resolve(requested: str = "auto") -> Placement:
    """Turn ``--strategy`` into a Placement for the active Keras backend.

    Call it before any other backend work: ``MultiWorkerMirroredStrategy`` must be created
    before TensorFlow initialises its runtime.
    """
    check_strategy(requested)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(requested)
    if backend == "jax":
        return _jax(requested)
    return _single_device_only(requested, backend)


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` (``{}`` when unset), with a clear error when it is not JSON."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise RunError(f"TF_CONFIG is not valid JSON ({exc})", hint=f"see {DOCS}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise RunError('TF_CONFIG has no "cluster"', hint=f"see {DOCS} for the two-host example")
    return config


def _cluster_size(config: dict) -> int:
    return sum(len(v) for k, v in config.get("cluster", {}).items() if k in ("chief", "worker"))


def _tensorflow(requested: str) -> Placement:
    import tensorflow as tf

    config = tf_config()
    if requested == "auto":
        if _cluster_size(config) > 1:
            requested = "multi-worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            requested = "mirrored"
        else:
            requested = "none"
    if requested == "none":
        first = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0]
        return Placement("none", "tensorflow", devices=[first.name])
    if requested == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Placement("mirrored", "tensorflow", strategy.num_replicas_in_sync, devices, _scope=strategy.scope)
    # multi-worker
    if not config:
        raise RunError(
            "--strategy multi-worker needs TF_CONFIG describing the cluster and this worker's task",
            hint=f"see {DOCS} for the two-host example",
        )
    task = config.get("task") or {}
    kind, index = task.get("type"), task.get("index")
    if kind not in config["cluster"] or not isinstance(index, int) or index >= len(config["cluster"][kind]):
        raise RunError(f"TF_CONFIG's task {task} is not in its cluster {config['cluster']}", hint=f"see {DOCS}")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        raise RunError(f"Cannot start MultiWorkerMirroredStrategy: {exc}", hint=f"see {DOCS}") from None
    _fix_keras_for_multi_worker()
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])
    order = config["cluster"].get("chief", []) + config["cluster"].get("worker", [])
    me = config["cluster"][kind][index]
    return Placement(
        "multi-worker",
        "tensorflow",
        strategy.num_replicas_in_sync,
        [getattr(d, "name", d) for d in strategy.extended.worker_devices],
        worker=order.index(me),
        workers=len(order),
        chief=chief,
        _scope=strategy.scope,
    )


# Keras' own names for the cluster (keras.distribution.initialize reads them): the coordinator's
# host:port (or every process's, comma-separated, the first being the coordinator), the number of
# processes and this process's id (0 is the coordinator and the chief).
JAX_CLUSTER_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def jax_cluster() -> dict | None:
    """The JAX cluster from the environment (``None`` when no variable is set), checked."""
    values = {name: os.environ.get(name, "").strip() for name in JAX_CLUSTER_VARIABLES}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise RunError(f"JAX multi-worker needs {', '.join(missing)} set as well", hint=f"see {DOCS}")
    addresses, count, index = values.values()
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise RunError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={count!r} and KERAS_DISTRIBUTION_PROCESS_ID={index!r} "
            "must be whole numbers",
            hint=f"see {DOCS}",
        ) from None
    if count < 1 or not 0 <= index < count:
        raise RunError(f"KERAS_DISTRIBUTION_PROCESS_ID={index} is not in 0..{count - 1}", hint=f"see {DOCS}")
    jobs = addresses.split(",")
    if len(jobs) > 1 and len(jobs) != count:
        raise RunError(
            f"KERAS_DISTRIBUTION_JOB_ADDRESSES names {len(jobs)} processes, "
            f"KERAS_DISTRIBUTION_NUM_PROCESSES says {count}",
            hint="give the coordinator's host:port alone, or one per process",
        )
    return {"coordinator": jobs[0], "processes": count, "process": index}


def _jax(requested: str) -> Placement:
    cluster = jax_cluster()
    if requested == "multi-worker" and cluster is None:
        raise RunError(
            "--strategy multi-worker on JAX needs " + ", ".join(JAX_CLUSTER_VARIABLES),
            hint=f"see {DOCS} for the two-host example",
        )
    if cluster is not None and requested in ("auto", "multi-worker") and cluster["processes"] > 1:
        return _jax_multi_process(cluster)
    import jax

    if jax.process_count() > 1:  # pragma: no cover - initialised by someone else
        raise RunError("JAX runs several processes here: use --strategy multi-worker", hint=f"see {DOCS}")
    devices = keras.distribution.list_devices()
    if requested == "auto":
        requested = "mirrored" if len(devices) > 1 else "none"
    if requested == "none":
        return Placement("none", "jax", devices=devices[:1])
    distribution = keras.distribution.DataParallel(devices=devices)
    return Placement("mirrored", "jax", len(devices), devices, batch_multiple=len(devices), _scope=distribution.scope)


def _jax_multi_process(cluster: dict) -> Placement:
    """``keras.distribution.DataParallel`` over every device of every process. Each process feeds
    its own share of every global batch (``Placement.shard``), so the dataset is not sharded by
    Keras (``auto_shard_dataset=False``: Keras shards only ``tf.data`` pipelines)."""
    import jax

    if not jax.distributed.is_initialized():
        try:
            keras.distribution.initialize(
                cluster["coordinator"], cluster["processes"], cluster["process"]
            )  # jax.distributed.initialize, before any other JAX work
        except (RuntimeError, ValueError) as exc:
            raise RunError(
                f"Cannot join the JAX cluster at {cluster['coordinator']} as process {cluster['process']} "
                f"of {cluster['processes']}: {str(exc).splitlines()[0] if str(exc) else exc}",
                hint=f"start every process within the timeout, with the same coordinator; see {DOCS}",
            ) from None
    devices = keras.distribution.list_devices()
    local = jax.local_device_count()
    if local * jax.process_count() != len(devices):  # pragma: no cover - uneven hosts
        raise RunError("Every JAX process must have the same number of devices", hint=f"see {DOCS}")
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    return Placement(
        "multi-worker",
        "jax",
        len(devices),
        devices,
        worker=jax.process_index(),
        workers=jax.process_count(),
        chief=jax.process_index() == 0,
        batch_multiple=len(devices),
        _scope=distribution.scope,
    )


def steps_per_execution(requested: int) -> int:
    """The ``steps_per_execution`` to compile with, inside the placement's scope: 1 where Keras'
    multi-step call does not work. Torch's trainer refuses more than 1; TensorFlow's under a
    ``tf.distribute`` strategy fails in its first call (a while_loop over the distributed
    iterator: "You must feed a value for placeholder tensor", seen with two workers)."""
    backend = keras.backend.backend()
    if backend == "torch":
        return 1
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            return 1
    return requested


def _single_device_only(requested: str, backend: str) -> Placement:
    if requested in ("mirrored", "multi-worker"):
        raise RunError(
            f"The {backend} backend trains on one device: Keras 3 has no data-parallel training for it",
            hint="for several devices use KERAS_BACKEND=tensorflow (mirrored, multi-worker) "
            "or KERAS_BACKEND=jax (mirrored)",
        )
    note = ""
    if backend == "torch":
        import torch

        if torch.cuda.device_count() > 1:
            note = f"{torch.cuda.device_count()} GPUs visible, the torch backend uses one"
    return Placement("none", backend, devices=["default"], note=note)


def _fix_keras_for_multi_worker() -> None:
    """Work around Keras 3's TensorFlow trainer under ``MultiWorkerMirroredStrategy``.

    Upstream bugs keras-team/keras#20585 and tensorflow/tensorflow#72388: ``fit`` fails before its
    first step because (1) it builds the model from a sample batch that it reduces across workers
    ("Attempt to convert a value (PerReplica...)") and (2) it averages each step's scalar metrics
    with ``reduce(..., axis=0)`` ("Invalid reduction dimension 0"). We build from this worker's
    own sample batch and average the metrics over all replicas with ``axis=None``. Installed only
    in a multi-worker process; a no-op if a later Keras renames these internals.
    """
    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError:  # pragma: no cover - Keras internals moved
        return
    import tensorflow as tf

    trainer_class = getattr(tf_trainer, "TensorFlowTrainer", None)
    original_reduce = getattr(tf_trainer, "reduce_per_replica", None)
    if trainer_class is None or original_reduce is None or getattr(original_reduce, "_resnetctl", False):
        return

    def local_value(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return tf.distribute.get_strategy().experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                with self.distribute_strategy.scope():
                    data_batch = tree.map_structure(local_value, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction == "auto":
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    reduce_per_replica._resnetctl = True
    trainer_class._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica


# --------------------------------------------------------------------------- device memory (--batch-size auto)
def accelerator() -> dict | None:
    """The first accelerator (``{"device", "limit_bytes"}``; ``limit_bytes`` None where the backend
    does not say: TensorFlow's allocator), or None on a CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return {"device": gpus[0].name, "limit_bytes": None} if gpus else None
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        return {"device": str(device), "limit_bytes": (device.memory_stats() or {}).get("bytes_limit")}
    import torch

    if not torch.cuda.is_available():
        return None
    return {"device": torch.cuda.get_device_name(0), "limit_bytes": torch.cuda.mem_get_info()[1]}


def peak_resets() -> bool:
    """Whether :func:`reset_peak_memory` starts the peak anew: not on JAX, whose peak only grows,
    so a measurement smaller than an earlier one reads the earlier peak."""
    return keras.backend.backend() != "jax"


def reset_peak_memory() -> None:
    """Start counting the peak anew where the backend can (:func:`peak_resets`)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")
    elif backend == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> int | None:
    """Bytes of accelerator memory at the peak since :func:`reset_peak_memory`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    if backend == "jax":
        import jax

        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    import torch

    return int(torch.cuda.max_memory_allocated())


def is_out_of_memory(exc: BaseException) -> bool:
    """TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED, torch's OutOfMemoryError."""
    text = f"{type(exc).__name__}: {exc}"
    return any(mark in text for mark in ("ResourceExhausted", "RESOURCE_EXHAUSTED", "OutOfMemory", "out of memory"))

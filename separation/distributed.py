"""Training on several devices or machines for train.py's ``--distribute``: the tf.distribute
strategy, the run folder of each worker, and the one-line stop when another worker is lost.

TensorFlow is imported inside the functions (``--help`` stays instant).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from separation.errors import UserError


def make_strategy(name: str):
    """The tf.distribute strategy for ``--distribute`` (None for "none").

    MirroredStrategy replicates over the machine's GPUs, or over its CPU devices when it has no
    GPU (one, unless logical devices were configured); MultiWorkerMirroredStrategy reads the
    cluster from TF_CONFIG. Create it before any other TensorFlow call: the multi-worker one
    must come first.
    """
    if name == "none":
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"--distribute {name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    if name == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        strategy.reduce = functools.partial(_reduce_each, strategy.reduce, strategy)
        return strategy
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])


def _reduce_each(reduce, strategy, reduce_op, value, axis=None):
    """``strategy.reduce`` for Keras 3's ``fit`` under MultiWorkerMirroredStrategy, which without it
    fails (keras-team/keras#20585): Keras reduces a whole (x, y) batch at once, which the strategy's
    cross-worker reduce does not take, and reduces scalar losses along an axis 0 they lack. Here
    each value of the structure is reduced alone, scalars over the replicas only."""
    import tensorflow as tf

    def one(v):
        scalar = strategy.experimental_local_results(v)[0].shape.rank == 0
        return reduce(reduce_op, v, None if scalar else axis)

    return tf.nest.map_structure(one, value)


def lost_worker_errors(strategy) -> tuple:
    """The TensorFlow errors by which a multi-worker run learns that another worker stopped
    (its collective operations are aborted when the peer misses its heartbeats); () otherwise,
    so that ``except lost_worker_errors(strategy)`` catches nothing."""
    if strategy is None:
        return ()
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return ()
    return tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError


def lost_workers(err, strategy) -> str:
    """The other tasks that TensorFlow's error names, e.g. "worker 1", else "another worker"."""
    resolver = strategy.cluster_resolver
    tasks = sorted(set(re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", str(err)))
                   - {(resolver.task_type, str(resolver.task_id))})
    return " and ".join(f"{job} {task}" for job, task in tasks) or "another worker"


def worker_run_dir(run_dir: Path, strategy) -> Path:
    """The folder this worker writes: ``run_dir`` for the chief (or worker 0 of a cluster without
    a chief) and for a run on one machine; ``<run_dir>.<task><index>`` beside it for the other
    workers, so that only the chief writes the run folder."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return run_dir if is_chief else run_dir.with_name(f"{run_dir.name}.{task_type}{task_id}")

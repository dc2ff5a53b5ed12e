"""Data-parallel training on TensorFlow's own distribution engine (`tf.distribute`).

One process drives every GPU of its machine (`MirroredStrategy`); several machines each run one
process configured by the standard `TF_CONFIG` variable (`MultiWorkerMirroredStrategy`). Gradients
are averaged by the strategy's all-reduce, never by hand.

Why the result equals one process with the global batch: every worker draws the same global batch
`[..., R * B, T + 1]` from the same seeded sampler; replica r (numbered across all workers) takes rows
`r * B : (r + 1) * B`; each replica's loss is a mean over its rows, so the MEAN all-reduce of losses
and gradients is the mean over all R * B rows. Every replica then applies the same averaged gradients
to its own copy of the weights (and optimizer slots), so the copies stay identical.

The update runs in cross-replica context through `strategy.extended.update`, where reading or
assigning a mirrored variable (also `var.handle`, as used by raw optimizer kernels) means the copy
on the device being updated: an optimizer written over plain `tf.Variable`s works unchanged.

Stopping: a SIGINT/SIGTERM handler only raises a flag (the trainer's `StopFlag`); the train step
takes that flag and it rides on the step's all-reduce, so every worker learns at the same step that
someone asked to stop, and the job ends together after the chief's save. A worker that dies makes
the others' collectives fail with one of `PEER_ERRORS`; the chief then saves what it has (its
weights are those after the last completed step) and every survivor exits with one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from .errors import UserError

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
TASK_TYPES = ("chief", "worker")
# What a collective raises on the survivors when a peer dies or is aborted.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
               tf.errors.DeadlineExceededError, tf.errors.FailedPreconditionError,
               tf.errors.InternalError)


# --- TF_CONFIG -------------------------------------------------------------------------------


def parse_tf_config(text: str | None) -> dict:
    """Validate the `TF_CONFIG` JSON; returns it as a dict. One UserError line per problem."""
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text or not text.strip():
        raise UserError(f"--strategy multi_worker needs the TF_CONFIG environment variable ({example})")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e.msg} at char {e.pos}); {example}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError(f"TF_CONFIG needs a \"cluster\" and a \"task\" object; {example}")
    for job, hosts in cluster.items():
        if job not in TASK_TYPES:
            raise UserError(f"TF_CONFIG cluster job {job!r} is not supported (use \"chief\" and/or "
                            f"\"worker\"); {example}")
        if not isinstance(hosts, list) or not hosts or not all(
                isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts):
            raise UserError(f"TF_CONFIG cluster.{job} must be a non-empty list of \"host:port\" "
                            f"strings, got {hosts!r}")
    if len(cluster.get("chief", [])) > 1:
        raise UserError("TF_CONFIG cluster.chief must list exactly one \"host:port\"")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG task {task!r} does not name a member of the cluster "
                        f"(type one of {sorted(cluster)}, index from 0)")
    return config


def chief_task(config: dict) -> tuple[str, int]:
    """The task that writes: "chief" 0 if the cluster has one, else "worker" 0."""
    return ("chief", 0) if "chief" in config["cluster"] else ("worker", 0)


def is_chief_task(config: dict) -> bool:
    return (config["task"]["type"], config["task"]["index"]) == chief_task(config)


# --- strategies ------------------------------------------------------------------------------


def _replica_devices() -> list[str]:
    """Every visible GPU, else every (logical) CPU: what `mirrored` spreads over."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` for `--strategy NAME`.

    auto: `default` on one device, `mirrored` when more than one GPU is visible.
    default: no distribution (one device). mirrored: every GPU of this machine (or every logical
    CPU device; on a plain CPU that is one). multi_worker: `MultiWorkerMirroredStrategy` over the
    machines in `TF_CONFIG`, each using all its GPUs.

    Call it before anything else touches TensorFlow: `multi_worker` must configure collective ops
    before the runtime starts, and it blocks until every worker of the cluster is up.
    """
    name = str(name)
    if name not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            logger.warning("warning: TF_CONFIG is set but --strategy auto ignores it; "
                           "use --strategy multi_worker to train across machines")
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_replica_devices())
    parse_tf_config(os.environ.get("TF_CONFIG"))
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError, tf.errors.OpError) as e:
        message = str(getattr(e, "message", e)).splitlines()[0][:200]
        raise UserError(f"cannot start multi_worker from TF_CONFIG ({message}); create the "
                        f"strategy before any other TensorFlow call and check the host:port "
                        f"list") from None


def num_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas across all workers: the global batch is this times --batch_size."""
    return int(strategy.num_replicas_in_sync)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return sum(len(v) for k, v in spec.items() if k in TASK_TYPES) or 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one process that writes checkpoints, the counter, samples and logs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    spec = resolver.cluster_spec().as_dict()
    config = {"cluster": spec, "task": {"type": resolver.task_type, "index": resolver.task_id}}
    return is_chief_task(config)


def describe(strategy: tf.distribute.Strategy, batch_size: int) -> str:
    """One line for the start of a run: strategy, replicas and the global batch."""
    kind = {"MirroredStrategy": "mirrored", "MultiWorkerMirroredStrategy": "multi_worker",
            "CollectiveAllReduceStrategy": "multi_worker"}.get(type(strategy).__name__, "default")
    r = num_replicas(strategy)
    where = f", {num_workers(strategy)} workers" if kind == "multi_worker" else ""
    return (f"strategy {kind}: {r} replica{'s' * (r != 1)}{where}; global batch {r} x "
            f"{batch_size} = {r * batch_size} rows per micro-batch")


# --- batches ---------------------------------------------------------------------------------


def replica_slice(tokens: tf.Tensor, batch_size: int, axis: int = -2) -> tf.Tensor:
    """In replica context: this replica's rows `r*B:(r+1)*B` of a global batch along `axis`.

    Feeding the global batch to the compiled step and slicing inside (rather than distributing
    per-replica values with `experimental_distribute_values_from_function`) keeps one fixed input
    signature for every strategy, so the step traces once and the single-device path is the same
    code; the token batch is tiny next to the weights, so copying it whole to each device costs
    nothing measurable.
    """
    r = tf.distribute.get_replica_context().replica_id_in_sync_group
    start = tf.cast(r, tf.int32) * batch_size
    axis = axis % tokens.shape.rank
    begin = [0] * tokens.shape.rank
    size = [-1] * tokens.shape.rank
    begin[axis], size[axis] = start, batch_size
    return tf.slice(tokens, tf.stack(begin), size)


# --- the step --------------------------------------------------------------------------------


def all_reduce_mean(loss: tf.Tensor, grads: Sequence[tf.Tensor], stop: tf.Tensor | None = None):
    """In replica context: mean loss and gradients over all replicas, and whether any replica
    asked to stop (`stop` a 0/1 float32 scalar). One batched collective for everything."""
    ctx = tf.distribute.get_replica_context()
    n = tf.cast(ctx.num_replicas_in_sync, tf.float32)
    flag = tf.zeros([]) if stop is None else tf.cast(stop, tf.float32)
    scalars = tf.stack([tf.cast(loss, tf.float32), flag])
    scalars, grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (scalars, list(grads)))
    return scalars[0] / n, [g / n for g in grads], scalars[1] > 0


def update_everywhere(strategy: tf.distribute.Strategy, anchor: tf.Variable,
                      update: Callable[..., Any], *args) -> tf.Operation:
    """In cross-replica context: run `update(*args)` once per local copy of the variables.

    `anchor` is any variable created under `strategy.scope()`; it picks the devices. Inside
    `update`, every mirrored variable (its reads, `assign*`, and `.handle`) is the copy on the
    device being updated, and per-replica `args` are that replica's values.
    """
    def on_device(_copy, *local_args):
        update(*local_args)
        return tf.constant(0)  # extended.update wants a result it can group

    return strategy.extended.update(anchor, on_device, args=args, group=True)


def first_local(strategy: tf.distribute.Strategy, value):
    """The first local replica's value of a per-replica result (identical after an all-reduce)."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


class TrainStep:
    """`step(tokens, lr, step, stop=False) -> (loss, grad_norm, stop_all)` under any strategy.

    tokens: int32 `[accumulate, R * B, T + 1]`, the global batch, identical on every worker.
    grads_fn(local_tokens [accumulate, B, T + 1], step) -> (loss, [grad per variable]): runs per
      replica (forward, backward, micro-batch averaging), knows nothing of distribution.
    apply(grads: dict name -> tensor, lr, step): the optimizer update over plain variables.
    clip(grads dict) -> (grads dict, norm): e.g. a global-norm clip, applied to averaged grads.
    """

    def __init__(self, strategy: tf.distribute.Strategy, variables: dict[str, tf.Variable],
                 grads_fn: Callable, apply: Callable, *, batch_size: int, accumulate: int,
                 window: int, clip: Callable | None = None, jit: bool = False):
        self.strategy, self.variables = strategy, dict(variables)
        self.names = list(variables)
        self.grads_fn, self.apply, self.clip = grads_fn, apply, clip
        self.batch_size = batch_size
        shape = [accumulate, batch_size * num_replicas(strategy), window + 1]
        self.fn = tf.function(self._step, jit_compile=jit, autograph=False, input_signature=[
            tf.TensorSpec(shape, tf.int32), tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32)])

    def _replica(self, tokens, step, stop):
        loss, grads = self.grads_fn(replica_slice(tokens, self.batch_size, axis=1), step)
        loss, grads, stop_all = all_reduce_mean(loss, grads, stop)
        grads = dict(zip(self.names, grads, strict=True))
        norm = tf.constant(0.0)
        if self.clip is not None:
            grads, norm = self.clip(grads)
        return loss, norm, stop_all, grads

    def _step(self, tokens, lr, step, stop):
        loss, norm, stop_all, grads = self.strategy.run(self._replica, args=(tokens, step, stop))
        # Nothing is written until every gradient has arrived: a collective that fails half-way
        # (a worker died) leaves the weights of the last completed step untouched.
        barrier = tf.nest.flatten(self.strategy.experimental_local_results(grads))
        with tf.control_dependencies(barrier):
            done = update_everywhere(self.strategy, self.variables[self.names[0]],
                                     lambda g: self.apply(g, lr, step), grads)
        with tf.control_dependencies([done]):
            return tf.nest.map_structure(tf.identity, first_local(self.strategy,
                                                                  (loss, norm, stop_all)))

    def __call__(self, tokens: np.ndarray, lr: float, step: int, stop: bool = False):
        loss, norm, stop_all = self.fn(tf.constant(tokens, tf.int32), tf.constant(lr, tf.float32),
                                       tf.constant(step, tf.int64), tf.constant(float(stop)))
        return float(loss), float(norm), bool(stop_all)

    def tracing_count(self) -> int:
        return self.fn.experimental_get_tracing_count()


class EvalLoss:
    """Mean loss over any number of rows `[N, T + 1]` under the strategy (for validation).

    row_losses(rows [B, T + 1]) -> [B] mean loss of each row, per replica. The rows go through
    the replicas in global batches of R * B; the last one is padded with copies of row 0 that
    are masked out, so the result is the mean over exactly the N rows given (equal to the mean of
    the batch means when the rows come in equal batches), whatever R is. Every worker must call
    it with the same rows, like the train step.
    """

    def __init__(self, strategy: tf.distribute.Strategy, row_losses: Callable, *, batch_size: int,
                 window: int):
        self.strategy, self.row_losses, self.batch_size = strategy, row_losses, batch_size
        self.rows = batch_size * num_replicas(strategy)
        self.fn = tf.function(self._sum, autograph=False, input_signature=[
            tf.TensorSpec([self.rows, window + 1], tf.int32), tf.TensorSpec([self.rows], tf.float32)])

    def _replica(self, rows, mask):
        losses = self.row_losses(replica_slice(rows, self.batch_size, axis=0))
        mine = tf.reduce_sum(tf.cast(losses, tf.float32) * replica_slice(mask, self.batch_size, 0))
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, mine)

    def _sum(self, rows, mask):
        return first_local(self.strategy, self.strategy.run(self._replica, args=(rows, mask)))

    def __call__(self, rows: np.ndarray, on_rows=None) -> float:
        rows = np.asarray(rows, np.int32)
        n = len(rows)
        if n == 0:
            raise ValueError("EvalLoss needs at least one row")
        pad = -n % self.rows
        padded = np.concatenate([rows, np.repeat(rows[:1], pad, axis=0)]) if pad else rows
        mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        total = 0.0
        for i in range(0, len(padded), self.rows):
            total += float(self.fn(tf.constant(padded[i:i + self.rows]),
                                   tf.constant(mask[i:i + self.rows])))
            if on_rows is not None:
                on_rows(min(self.rows, n - i))
        return total / n


# --- state shared from the chief -------------------------------------------------------------


def broadcast_from_chief(strategy: tf.distribute.Strategy,
                         values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The chief's `values` on every worker (each passes arrays of the same shapes and dtypes).

    For resuming when workers do not share a file system, or to agree on loop state such as the
    step counter: every worker loads what it can, then takes the chief's. A no-op on one worker.
    Implemented as a SUM all-reduce where only global replica 0 (the chief's first device)
    contributes, which is exact for floats and integers.
    """
    if num_workers(strategy) == 1:
        return dict(values)
    names = list(values)
    dtypes = {n: np.asarray(values[n]).dtype for n in names}
    wire = {n: np.asarray(values[n]).astype(np.float64 if dtypes[n].kind in "iub" else dtypes[n])
            for n in names}

    @tf.function(autograph=False)
    def run(parts):  # arguments, not constants: the graph stays small for big weights
        def replica(parts):
            ctx = tf.distribute.get_replica_context()
            mine = tf.equal(ctx.replica_id_in_sync_group, 0)
            parts = [tf.where(mine, p, tf.zeros_like(p)) for p in parts]
            out = list(parts)
            for dtype in {p.dtype for p in parts}:  # one batched collective per dtype
                idx = [i for i, p in enumerate(parts) if p.dtype == dtype]
                summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [parts[i] for i in idx])
                for i, v in zip(idx, summed, strict=True):
                    out[i] = v
            return out

        return first_local(strategy, strategy.run(replica, args=(parts,)))

    out = run([tf.constant(wire[n]) for n in names])
    return {n: v.numpy().astype(dtypes[n]) for n, v in zip(names, out, strict=True)}


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether `flag` is true on any worker (every worker must call this at the same point)."""
    if num_workers(strategy) == 1:
        return bool(flag)

    @tf.function(autograph=False)
    def run(value):
        def replica(value):
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value))  # a local copy

        return first_local(strategy, strategy.run(replica, args=(value,)))

    return float(run(tf.constant(float(bool(flag))))) > 0


def check_same_start(strategy: tf.distribute.Strategy, **values: int) -> None:
    """Fail on every worker, with one line, unless all start from the chief's loop state (e.g.
    step, seed, a checksum of the data sampler's state): workers that resumed from different
    checkpoints would silently train on different data."""
    if num_workers(strategy) == 1:
        return
    mine = {k: np.int64(v) for k, v in values.items()}
    chief = broadcast_from_chief(strategy, mine)
    differ = [f"{k} {int(mine[k])} (chief: {int(chief[k])})" for k in mine if chief[k] != mine[k]]
    fix = ("give every worker the same run folder (a shared file system, or a copy of the "
           "chief's) and the same flags")
    if any_worker(strategy, bool(differ)):  # so that all stop, not only the odd one
        if differ:
            raise UserError(f"this worker does not start where the chief does: "
                            f"{', '.join(differ)}; {fix}")
        raise UserError(f"another worker does not start where this one does (see its log); {fix}")


# --- a worker that left --------------------------------------------------------------------------------


def peer_failure_message(error: BaseException) -> str:
    """One line for a collective that failed because another worker left."""
    lines = [ln.strip() for ln in str(getattr(error, "message", error)).splitlines() if ln.strip()]
    telling = [ln for ln in lines if re.search(r"unavailable|connect|down|abort|cancel|deadline", ln, re.I)]
    detail = (telling or lines or [""])[0][:160]
    return (f"another worker stopped or became unreachable ({type(error).__name__}: {detail}); "
            f"ending the job")

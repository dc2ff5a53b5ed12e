"""The training loop: a plain, ordered Python loop around one compiled step.

Order of one iteration (nanoGPT's), with N = completed updates:
  stop? (Ctrl+C/SIGTERM, or --steps reached) -> save / sample / validate when N is a multiple of
  their interval -> one update on a fresh batch -> N += 1 -> log `[N | elapsed] loss=.. avg=..`.
On the way out it saves model-N (unless just saved), so Ctrl+C, SIGTERM and --steps never lose work.

Everything random is seeded from one `--seed` (random when not given, logged and saved): the data
sampler (its state is saved), the noise in the step (stateless, seeded by seed and step), sample
prompts and sample generation (seeded by seed and N). A resumed run therefore continues exactly as
an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import shutil
import signal
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tqdm.auto import tqdm

from . import distribute, runfolder
from .best import Best
from .errors import UserError
from .locate import read_best, write_best
from .machine import resolve_precision, resolve_xla
from .metrics import MetricsLog
from .model import GPT2
from .optim import Optimizer
from .sample_writer import SampleWriter
from .step import EvalLoss, StepConfig, TrainStep
from .train_config import TrainConfig  # noqa: F401 - re-exported: trainer.TrainConfig
from .train_inputs import TrainInputs, read_inputs
from .windows import Sampler

logger = logging.getLogger(__name__)

# TensorBoard's scalar format, written with core TF (the tensorboard package is not needed).
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)


def scalar(name: str, value: float, step: int) -> None:
    """Log one TensorBoard scalar to the default summary writer."""
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_SCALAR)


class StopFlag:
    """SIGINT/SIGTERM set `requested`; the loop stops after the current step and saves. While the
    final save runs, further signals are only acknowledged (the save is atomic anyway)."""

    def __init__(self):
        self.requested = False
        self.saving = False
        self._old = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.saving:
            logger.warning("%s: still saving, please wait", name)
        elif self.requested:
            logger.warning("%s: already stopping: finishing this step, then saving", name)
        else:
            logger.warning("%s: stopping after this step and saving", name)
        self.requested = True

    def __enter__(self) -> StopFlag:
        # Only the main thread may set handlers (Python's rule); a training started from another
        # thread (e.g. by an application) runs without them: Ctrl+C then goes to the main thread.
        # A handler set outside Python (getsignal None) could not be put back: it is left alone.
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(s) is not None:
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():  # the caller's handlers again (a notebook's Ctrl+C)
            signal.signal(s, old)


def train(cfg: TrainConfig, on_sample: Callable[[str], None] | None = None,
          inputs: TrainInputs | None = None) -> dict:
    """Run a training as configured; returns a summary dict (steps, loss, checkpoint, samples).
    `inputs`: the model folder and data, when the caller read them already (`read_inputs(cfg)`)."""
    auto = cfg.precision == "auto"  # resolved now, stated in the "training ..." line
    if auto:
        cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, log=False))
    cfg.check()
    inputs = inputs if inputs is not None else read_inputs(cfg)
    run_dir = Path(cfg.checkpoint_dir).expanduser() / cfg.run_name
    # First TensorFlow call: multi_worker must set up collectives before the runtime starts.
    strategy = distribute.make_strategy(cfg.strategy)
    chief = distribute.is_chief(strategy)  # the only one that writes (checkpoints, samples, logs)
    created = next((p for p in (*reversed(run_dir.parents), run_dir) if not p.exists()), None)
    lock = runfolder.RunLock(run_dir) if chief else None
    try:
        return _train(cfg, inputs, run_dir, on_sample, strategy, chief, auto)
    except distribute.PEER_ERRORS as e:  # a worker left before or between the loop's checks
        if distribute.num_workers(strategy) == 1:
            raise
        raise UserError(distribute.peer_failure_message(e)) from None
    except BaseException:
        # A run that fails before its first checkpoint leaves no folder behind (no partial output).
        if chief and created is not None and not runfolder.candidates(run_dir):
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, inputs: TrainInputs, run_dir: Path, on_sample,
           strategy: tf.distribute.Strategy, chief: bool, auto_precision: bool) -> dict:
    src, hp, chunks, window = inputs.src, inputs.hp, inputs.chunks, inputs.window
    sample_length = cfg.sample_length or hp.n_ctx - 1
    start = runfolder.find_start(cfg.restore_from, run_dir, inputs.base, hp)
    tokens = sum(len(c) for c in chunks)
    logger.info("dataset has %d tokens in %d chunk%s", tokens, len(chunks), "s" * (len(chunks) > 1))
    if chief:
        runfolder.copy_model_files(src, run_dir, hp)

    saved = start.extra.get("train/seed")
    saved = int(saved) if saved is not None else None
    seed = cfg.seed if cfg.seed is not None else saved if saved is not None else secrets.randbelow(2**31)
    seed = int(distribute.broadcast_from_chief(strategy, {"seed": np.int64(seed)})["seed"])
    sampler = Sampler(chunks, seed=seed)
    sampler_state = runfolder.state_text(start.extra, "train/sampler")
    if sampler_state and seed == saved:  # continue the run's data order exactly
        sampler.set_state(json.loads(sampler_state))
    # Every worker draws the same global batches: they must start from the same state.
    distribute.check_same_start(strategy, step=start.step, seed=seed, data_order=zlib.crc32(
        json.dumps(sampler.get_state(), sort_keys=True).encode()))

    with strategy.scope():  # mirrored variables: one copy per replica, updated together
        gpt = GPT2(hp, start.weights, seed=seed)
        trained = {n: v for n, v in gpt.weights.items()
                   if not cfg.only_train_transformer_layers or "/h" in n}
        optimizer = Optimizer(cfg.optimizer, trained, weight_decay=cfg.weight_decay)
    if start.prefix and not optimizer.restore(start.extra) and cfg.optimizer != "sgd":
        logger.info("%s has no %s state for these weights: optimizer starts from zero",
                    runfolder.relpath(start.prefix), cfg.optimizer)
    jit = resolve_xla("auto" if cfg.xla is None else cfg.xla, cfg.precision, hp.n_params(), log=False)
    step_cfg = StepConfig(batch_size=cfg.batch_size, window=window,
                          accumulate=cfg.accumulate_gradients, noise=cfg.noise,
                          precision=cfg.precision, recompute=cfg.memory_saving_gradients,
                          grad_clip=cfg.grad_clip, seed=seed,
                          jit=jit)
    step_fn = TrainStep(gpt, optimizer, step_cfg, strategy)
    replicas, solo = distribute.num_replicas(strategy), distribute.num_workers(strategy) == 1
    logger.info("%s", distribute.describe(strategy, cfg.batch_size))
    schedule = cfg.schedule()
    validate = _validation(cfg, gpt, inputs, strategy)
    samples = SampleWriter(gpt, src, Path(cfg.sample_dir).expanduser() / cfg.run_name,
                           seed=seed, length=sample_length, num=cfg.sample_num,
                           batch_size=cfg.batch_size, top_k=cfg.top_k, top_p=cfg.top_p,
                           precision=cfg.precision, encoding=cfg.encoding, on_sample=on_sample)
    writer = tf.summary.create_file_writer(str(run_dir)) if chief else tf.summary.create_noop_writer()

    counter = first = start.step
    mlog = MetricsLog(run_dir, first) if chief else None  # metrics.jsonl, continued from `first`
    best = Best.from_state(start.extra)  # best validation so far (--keep_best, --early_stopping)
    if chief and cfg.keep_best and best.step >= 0:  # best.json agrees with the state resumed from
        name = f"model-{best.step}"
        if (run_dir / f"{name}.index").is_file() and (read_best(run_dir) or {}).get("checkpoint") != name:
            write_best(run_dir, name, best.step, best.loss)
    avg = tuple(float(x) for x in start.extra.get("train/avg_loss", (0.0, 0.0)))
    logger.info("training %s from %s: seed %d, %d x %d tokens per update, %s, %s%s, xla %s%s",
                cfg.run_name, start.describe(), seed, cfg.batch_size * replicas * cfg.accumulate_gradients,
                window, cfg.optimizer, cfg.precision, " (auto)" if auto_precision else "",
                "on" if jit else "off", " (auto)" if cfg.xla is None else "")

    def save(also_keep: int = -1) -> str:
        """Save model-<counter>; with --keep_best the best (and `also_keep`) stay whatever
        --max_checkpoints says."""
        if not chief:  # the chief writes this one
            return str(run_dir / f"model-{counter}")
        keep = {best.step, also_keep} - {-1} if cfg.keep_best else set()
        prefix = runfolder.save(
            run_dir, counter, {n: tf.convert_to_tensor(v) for n, v in gpt.weights.items()},
            optimizer.state(),
            seed=seed, sampler_state=sampler.get_state(), avg_loss=avg, optimizer=cfg.optimizer,
            max_to_keep=cfg.max_checkpoints, extra=best.state(),
            protect=tuple(f"model-{k}" for k in sorted(keep)), save_optimizer=cfg.save_optimizer)
        logger.info("saved %s", runfolder.relpath(prefix))
        mlog.sync()
        return prefix

    last_saved, loss, t0 = None, float("nan"), time.time()
    stop_all, failure = False, None  # stop_all: some worker was asked to stop (all agree on it)
    with StopFlag() as stop, writer.as_default():
        while True:
            # Ctrl+C/SIGTERM: save at once, no samples. With several workers only the stop they
            # all agreed on in the last step counts, so that every worker leaves at the same step.
            if stop_all or (solo and stop.requested):
                break
            final = cfg.steps is not None and counter - first >= cfg.steps
            if counter > first and (counter % cfg.save_every == 0 or final):
                last_saved = (save(), counter)
            if chief and counter > first and counter % cfg.sample_every == 0:
                samples.write(counter, sampler)
            if final:
                break
            if cfg.val_every and (counter % cfg.val_every == 0 or counter == first):
                try:
                    val = validate()
                except distribute.PEER_ERRORS as e:
                    failure = distribute.peer_failure_message(e)
                    break
                scalar("val_loss", val, counter)
                if mlog:
                    mlog.write(counter, val_loss=val)
                logger.info("[%d | %.2f] validation loss = %.4f", counter, time.time() - t0, val)
                previous = best.step
                if best.counts(counter, cfg.val_every) and best.update(val, counter) and cfg.keep_best:
                    here = run_dir / f"model-{counter}"
                    if not (last_saved and last_saved[1] == counter) and not (
                            counter == first and start.prefix
                            and Path(start.prefix).resolve() == here.resolve()):
                        # the previous best stays until best.json names the new one
                        last_saved = (save(also_keep=previous), counter)
                    if chief:
                        write_best(run_dir, here.name, counter, val)
                        logger.info("best so far: %s (validation loss %.4f)",
                                    runfolder.relpath(here), val)
            if best.exhausted(cfg.early_stopping):
                logger.info("early stopping: no lower validation loss in the last %d validations "
                            "(best %.4f at step %d)", best.bad, best.loss, best.step)
                break
            if solo and stop.requested:
                break
            batch = np.stack([sampler.sample_batch(cfg.batch_size * replicas, window + 1)
                              for _ in range(cfg.accumulate_gradients)])
            lr = schedule(counter)
            if counter == first:
                logger.info("compiling the training step (the first step is slow)...")
            t = time.time()
            try:
                loss, norm, stop_all = step_fn.update(batch, lr, counter, stop.requested)
            except distribute.PEER_ERRORS as e:  # a worker left: weights are those of `counter`
                failure = distribute.peer_failure_message(e)
                break
            elapsed = time.time() - t
            counter += 1
            avg = (avg[0] * 0.99 + loss, avg[1] * 0.99 + 1.0)
            tok_s = batch[..., 1:].size / elapsed
            for name, value in (("loss", loss), ("learning_rate", lr), ("tokens_per_sec", tok_s)):
                scalar(name, value, counter)
            if counter % cfg.print_every == 0:
                if mlog:
                    mlog.write(counter, loss=loss, avg=avg[0] / avg[1], lr=lr, tokens_per_sec=tok_s)
                logger.info("[%d | %.2f] loss=%.4f avg=%.4f tokens/s=%.0f%s", counter,
                            time.time() - t0, loss, avg[0] / avg[1], tok_s,
                            f" lr={lr:.3g}" if schedule.decay != "none" or cfg.warmup_steps else "")
            if not np.isfinite(loss):
                raise UserError(f"loss is {loss} at step {counter}: training diverged (lower "
                                f"--learning_rate or set --grad_clip); last checkpoint "
                                f"{last_saved[0] if last_saved else 'none'} is intact")
        stop.saving = True
        prefix = save() if not last_saved or last_saved[1] != counter else last_saved[0]
    writer.flush()
    if mlog:
        mlog.close()
    if failure:
        raise UserError(f"{failure}; saved {runfolder.relpath(prefix)}" if chief else failure)
    return {"steps": counter - first, "step": counter, "loss": loss,
            "checkpoint": runfolder.relpath(prefix), "samples": runfolder.relpath(samples.folder),
            "seed": seed, "best_step": best.step if best.step >= 0 else None,
            "best_val_loss": best.loss if best.step >= 0 else None,
            "stopped_early": best.exhausted(cfg.early_stopping)}


def _validation(cfg: TrainConfig, gpt: GPT2, inputs: TrainInputs, strategy: tf.distribute.Strategy):
    """A function returning the mean loss over fixed validation windows (classic: seed 1)."""
    if not cfg.val_every:
        return None
    val_chunks = inputs.chunks if inputs.val_chunks is None else inputs.val_chunks
    val_window = min(inputs.window, max(len(c) for c in val_chunks) - 1)
    fixed = Sampler(val_chunks, seed=1)
    batches = [fixed.sample_batch(cfg.val_batch_size, val_window + 1)
               for _ in range(cfg.val_batch_count)]
    loss = EvalLoss(gpt, cfg.val_batch_size, val_window, cfg.precision, strategy)
    rows = np.concatenate(batches)  # the mean over all rows = the mean of the batch means

    def validate() -> float:
        with tqdm(total=len(rows), unit="row", desc="validation", leave=False) as bar:
            return loss(rows, on_rows=bar.update)

    return validate

"""The server's generation worker: one thread owns TensorFlow; requests queue, batch and stream back.

    event loop (server)                    worker thread (this module)
    submit(jobs) -> Ticket  --queue-->     take a job, then whatever else waits (up to max_batch)
    async for event in ticket  <--------   engine.run_batch(jobs): one step at a time, every job
    ticket.cancel()  ------------------>   seen between steps: the job's rows are marked finished

The seam for batching is `Engine.run_batch(jobs)`: it generates every job of a batch and yields
`(job_index, tokens [n], done [n])` once per step of that job, reading `job.finished` (bool [n])
before every step, so that rows finished by a stop string, and cancelled jobs, stop costing
compute. `BatchingEngine` (the server's) runs the jobs of a batch together, prompts of different
lengths side by side in one compiled batch; `SequentialEngine` runs them one after another (a job's
n rows, one prompt, are one batch there; kept as the reference the tests compare with). The
contract of both, so that a request gives the same text whatever it is batched with:
row r of job j draws what row r of `Generator.generate([job.prompt] * job.n, job.settings.length,
job.settings.controls(0))` draws (the seed, temperature, top-k/p and penalty are per job); it may
yield the jobs' steps interleaved, in any order, and must skip rows whose `finished` entry is set.

Text is made here, not in the engine, with `sample._Row` (incremental UTF-8 decoding, stop strings,
the held-back tail), exactly as the sampling scripts make it, so the same seed gives the same text.

The event loop never waits on this thread: results come back with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from .sample import Settings, _Row
from .tokens import ENDOFTEXT_ID

logger = logging.getLogger(__name__)



@dataclasses.dataclass(eq=False)
class Job:
    """One prompt with n rows (the request's `n` choices), sampled with `settings`."""

    prompt: list[int]
    n: int
    settings: Settings
    first_choice: int = 0  # choice index of row 0 in the request's answer
    finished: np.ndarray = None  # bool [n]: rows the engine must not spend more steps on
    ticket: Ticket | None = None

    def __post_init__(self):
        if self.finished is None:
            self.finished = np.zeros(self.n, bool)


class Engine(Protocol):
    def run_batch(self, jobs: Sequence[Job]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Generate every job; yield (job index, tokens int [n], done bool [n]) per step of a job,
        at most `job.settings.length` steps per job, reading `job.finished` before every step.
        `done[r]` is set once row r produced its end-of-text token."""
        ...


class SequentialEngine:
    """`Engine` on the existing generator: the jobs of a batch one after another, each job's n rows
    as one batch of identical prompts (row r is row r of `interactive_conditional_samples.py
    --nsamples n --batch_size n` with the same seed)."""

    def __init__(self, generator):
        self.generator = generator

    def run_batch(self, jobs):
        for i, job in enumerate(jobs):
            if job.finished.all():
                continue
            prompts = np.array([job.prompt] * job.n, dtype=np.int32)
            steps = self.generator.generate(prompts, job.settings.length, job.settings.controls(0),
                                            job.finished)  # fmt: skip
            for tokens, done in steps:
                yield i, tokens, done

    def warm_up(self) -> None:
        """Compile batch 1 for short prompts now rather than on the first request."""
        self.generator.warm_up(1, 1, 2)


class BatchingEngine:
    """`Engine` that generates the jobs of a batch together: prompts of different lengths side by
    side in one compiled batch (left-padded, see `generate`), each row with its job's seed.

    Jobs are grouped by the controls a compiled batch shares (temperature, top-k, top-p, penalty,
    end-of-text); a group's jobs are packed, whole, into batches of at most `max_rows` rows, padded
    with idle rows to a power of two (so only batch sizes 1, 2, 4, 8, ... are ever compiled).
    Row r of job j gets seed `job.settings.seed`, stream 0 and lane r: what row r of the job alone
    draws (the contract above). Measured on the 124M shape on 2 cores: 8 rows of a batch cost about
    1.5x the time of one, so 8 clients together get several times the tokens/s of one.
    """

    def __init__(self, generator, max_rows: int = 8):
        self.generator, self.max_rows = generator, max_rows

    def run_batch(self, jobs):
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            if not job.finished.all():
                s = job.settings
                key = (s.temperature, s.top_k, s.top_p, s.repetition_penalty, s.stop_at_endoftext)
                groups.setdefault(key, []).append(i)
        for members in groups.values():
            for pack in self._packs(jobs, members):
                yield from self._run_pack(jobs, pack)

    def _packs(self, jobs, members: list[int]) -> list[list[int]]:
        """Consecutive jobs, whole, with at most max_rows rows together (a bigger job alone), and
        only jobs whose longest prompt and longest length fit the context together: each request
        fits alone, but a long prompt beside a long answer would not (the batch's cache holds the
        longest prompt plus the longest answer)."""
        n_ctx = self.generator.hp.n_ctx
        packs: list[list[int]] = []
        rows = prompt = length = 0
        for i in members:
            job = jobs[i]
            p, n = max(prompt, len(job.prompt)), max(length, job.settings.length)
            if packs and rows + job.n <= self.max_rows and p + n - 1 <= n_ctx:
                packs[-1].append(i)
                rows, prompt, length = rows + job.n, p, n
            else:
                packs.append([i])
                rows, prompt, length = job.n, len(job.prompt), job.settings.length
        return packs

    def _run_pack(self, jobs, pack: list[int]):
        rows = [(i, r) for i in pack for r in range(jobs[i].n)]
        size = self._size(len(rows))
        idle = size - len(rows)
        prompts = [jobs[i].prompt for i, _ in rows] + [[ENDOFTEXT_ID]] * idle
        seeds = [jobs[i].settings.seed for i, _ in rows] + [0] * idle
        lanes = [r for _, r in rows] + [0] * idle
        finished = np.ones(size, bool)
        where = {}  # job -> its rows' places in the batch
        for k, (i, _) in enumerate(rows):
            where.setdefault(i, []).append(k)

        def sync() -> None:  # the jobs' finished rows, as the scheduler set them, into the batch
            for i, places in where.items():
                finished[places] = jobs[i].finished

        sync()
        length = max(jobs[i].settings.length for i in pack)
        controls = dataclasses.replace(jobs[pack[0]].settings, seed=0).controls(0)
        steps = self.generator.generate(prompts, length, controls, finished, streams=[0] * size,
                                        lanes=lanes, seeds=seeds)  # fmt: skip
        for tokens, done in steps:
            for i, places in where.items():
                if not jobs[i].finished.all():
                    yield i, tokens[places], done[places]
            sync()

    def _size(self, rows: int) -> int:
        """The compiled batch size for `rows` rows: the next power of two (more than max_rows: as
        many as there are)."""
        return 1 << (rows - 1).bit_length() if rows <= self.max_rows else rows

    def warm_up(self) -> None:
        """Compile every batch size a request can meet, for short prompts, now rather than on the
        first request of that size (a few seconds each for 124M; cached on disk, see
        `compile_cache`)."""
        for size in sorted({self._size(rows) for rows in range(1, self.max_rows + 1)}):
            self.generator.warm_up(size, 1, 2)


class Busy(Exception):
    """The queue is full: answer 503 with Retry-After."""


class Ticket:
    """The event-loop side of one request: its jobs and the events they produce.

    Events: ("text", choice, piece), ("end", choice, finish_reason, completion_tokens),
    ("error", message). The ticket is over when every choice has ended or an error came.
    """

    def __init__(self, jobs: list[Job], loop: asyncio.AbstractEventLoop):
        self.jobs, self.loop = jobs, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False  # read by the worker between steps
        self.choices = sum(j.n for j in jobs)
        for j in jobs:
            j.ticket = self

    def put(self, event) -> None:  # from the worker thread
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.cancelled = True

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self):
        ended = 0
        while ended < self.choices:
            event = await self.events.get()
            yield event
            if event[0] == "error":
                return
            ended += event[0] == "end"


class Scheduler:
    """The worker thread and its bounded queue (see the module docstring)."""

    def __init__(self, engine: Engine, encoder, max_batch: int = 8, max_queue: int = 32,
                 batch_wait: float = 0.1, batch_gap: float = 0.03):  # fmt: skip
        self.engine, self.encoder = engine, encoder
        self.max_batch, self.max_queue = max_batch, max_queue
        self.batch_wait, self.batch_gap = batch_wait, batch_gap
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0  # requests queued, not yet started
        self._lock = threading.Lock()
        self._stopping = False
        self.busy_since: float | None = None
        self._thread = threading.Thread(target=self._work, name="gpt2easy-generate", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current step, drop what waits, end the thread."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, jobs: list[Job]) -> Ticket:
        """Queue a request's jobs (called on the event loop); raise Busy when the queue is full."""
        with self._lock:
            if self._waiting >= self.max_queue or self._stopping:
                raise Busy
            self._waiting += 1
        ticket = Ticket(jobs, asyncio.get_running_loop())
        for job in jobs:
            self._queue.put(job)
        return ticket

    # --- the worker thread --------------------------------------------------------------------

    def _take(self) -> list[Job] | None:
        """The next batch: one job (waiting for it), then those already queued or arriving while
        requests keep coming (each within `batch_gap` seconds of the last, `batch_wait` at most
        in all), up to max_batch. None when stopping.

        Why wait at all: clients answered by one batch send their next requests a few
        milliseconds apart; taking the first alone would run it as a batch of one while the
        others wait for it, and the server would alternate small and large batches. Measured with
        bench/serve.py (8 clients, 124M, 2 cores): a 5 ms wait gave batches of 8, 3, 8, 5 and
        3.5x the tokens/s of one client; 30 ms gaps (100 ms at most) give full batches and 5.4x.
        A lone request pays `batch_gap` (30 ms) before its first token."""
        first = self._queue.get()
        if first is None:
            return None
        jobs, deadline = [first], time.monotonic() + self.batch_wait
        while len(jobs) < self.max_batch:
            gap = min(self.batch_gap, deadline - time.monotonic())
            try:
                job = self._queue.get(timeout=max(0.0, gap))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
        started = {id(j.ticket): j.ticket for j in jobs if j.first_choice == 0}
        with self._lock:
            self._waiting -= len(started)
        return jobs

    def _work(self) -> None:
        while not self._stopping:
            jobs = self._take()
            if jobs is None:
                break
            self.busy_since = time.monotonic()
            try:
                self._run(jobs)
            except Exception as e:  # never let one request end the worker
                logger.exception("generation failed")
                for ticket in {id(j.ticket): j.ticket for j in jobs}.values():
                    ticket.put(("error", f"generation failed: {type(e).__name__}: {e}"))
                    ticket.cancel()
            finally:
                self.busy_since = None

    def _run(self, jobs: list[Job]) -> None:
        rows = [[_Row(self.encoder, j.settings.stop) for _ in range(j.n)] for j in jobs]
        counts = [np.zeros(j.n, int) for j in jobs]
        for job in jobs:
            if job.ticket.cancelled or self._stopping:
                job.finished[:] = True
        for i, tokens, done in self.engine.run_batch(jobs):
            job = jobs[i]
            for r, row in enumerate(rows[i]):
                if row.finished:
                    continue
                counts[i][r] += 1
                reason = None
                if tokens[r] == ENDOFTEXT_ID and job.settings.stop_at_endoftext:
                    row.close()
                    reason = "stop"
                else:
                    row.add([int(tokens[r])])
                    if row.finished:  # a stop string
                        reason = "stop"
                    elif done[r] or counts[i][r] >= job.settings.length:
                        row.close()
                        reason = "stop" if done[r] else "length"
                piece = row.take()
                if piece:
                    job.ticket.put(("text", job.first_choice + r, piece))
                if reason:
                    job.finished[r] = True
                    job.ticket.put(("end", job.first_choice + r, reason, int(counts[i][r])))
            for other in jobs:  # cancellations (client gone) and shutdown, seen between steps
                if other.ticket.cancelled or self._stopping:
                    other.finished[:] = True
        for i, job in enumerate(jobs):  # rows the engine stopped early (cancelled, shutting down)
            for r, row in enumerate(rows[i]):
                if not row.finished:
                    row.close()
                    piece = row.take()
                    if piece:
                        job.ticket.put(("text", job.first_choice + r, piece))
                    job.ticket.put(("end", job.first_choice + r, "length", int(counts[i][r])))

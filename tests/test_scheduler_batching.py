"""The server's batching engine gives every job what the job gives alone (the engine contract)."""

from __future__ import annotations

import numpy as np
from serve_util import loaded, tiny_models  # noqa: F401 (fixtures)

from gpt2easy.sample import Settings
from gpt2easy.scheduler import BatchingEngine, Job, SequentialEngine


def tokens_of(engine, jobs) -> list[np.ndarray]:
    """Per job, its rows' tokens [n, steps] (the rows finished at end of text are padded)."""
    out = [[] for _ in jobs]
    for i, tokens, _ in engine.run_batch(jobs):
        out[i].append(np.array(tokens))
        job = jobs[i]
        if len(out[i]) >= job.settings.length:
            job.finished[:] = True  # what the scheduler does when a job reached its length
    return [np.stack(t, axis=1) for t in out]


def make_jobs(cases) -> list[Job]:
    return [Job(prompt, n, Settings(**kw)) for prompt, n, kw in cases]


def test_jobs_batched_together_give_what_each_gives_alone(loaded):  # noqa: F811
    generator = loaded[0]
    cases = [
        ([5, 6, 7, 8, 9, 10], 1, dict(length=7, top_k=20, seed=1)),
        ([11], 2, dict(length=5, top_k=20, seed=2)),  # two rows, another prompt length
        ([12, 13, 14], 1, dict(length=9, top_k=20, seed=3, stop_at_endoftext=False)),  # own group
        ([15, 16], 1, dict(length=6, temperature=0.7, top_p=0.9, seed=4)),  # another group
        ([17, 18, 19], 3, dict(length=4, top_k=20, seed=-5)),
        ([20, 21], 1, dict(length=8, top_k=20, seed=2**40)),
    ]
    batched = tokens_of(BatchingEngine(generator, max_rows=4), make_jobs(cases))
    alone = [tokens_of(SequentialEngine(generator), make_jobs([case]))[0] for case in cases]
    for got, want in zip(batched, alone, strict=True):
        np.testing.assert_array_equal(got, want)
    packs = BatchingEngine(generator, max_rows=4)._packs(make_jobs(cases), [0, 1, 4, 5])
    assert packs == [[0, 1], [4, 5]]  # whole jobs, at most 4 rows together


def test_a_long_prompt_and_a_long_answer_go_in_separate_batches(loaded):  # noqa: F811
    """Each fits the context alone (n_ctx 64), together they would not: two batches, both right."""
    generator = loaded[0]
    cases = [(list(range(5, 65)), 1, dict(length=4, top_k=20, seed=1)),
             ([7, 8], 1, dict(length=50, top_k=20, seed=2))]
    engine = BatchingEngine(generator)
    assert engine._packs(make_jobs(cases), [0, 1]) == [[0], [1]]
    batched = tokens_of(engine, make_jobs(cases))
    alone = [tokens_of(SequentialEngine(generator), make_jobs([case]))[0] for case in cases]
    for got, want in zip(batched, alone, strict=True):
        np.testing.assert_array_equal(got, want)


def test_seeds_matter_per_row(loaded):  # noqa: F811
    """Two jobs with the same prompt and different seeds in one batch draw differently."""
    generator = loaded[0]
    cases = [([5, 6], 1, dict(length=12, seed=1)), ([5, 6], 1, dict(length=12, seed=2))]
    a, b = tokens_of(BatchingEngine(generator), make_jobs(cases))
    assert not np.array_equal(a, b)


def test_finished_rows_stop_and_sizes_are_powers_of_two(loaded):  # noqa: F811
    generator = loaded[0]
    engine = BatchingEngine(generator, max_rows=8)
    assert [engine._size(n) for n in (1, 2, 3, 5, 8, 11)] == [1, 2, 4, 8, 8, 11]
    jobs = make_jobs([([5], 1, dict(length=10, seed=1)), ([6, 7], 2, dict(length=10, seed=2))])
    seen = [0, 0]
    for i, _, _ in engine.run_batch(jobs):
        seen[i] += 1
        if i == 0 and seen[0] == 3:
            jobs[0].finished[:] = True  # cancelled after 3 steps: no more steps for it
        if i == 1 and seen[1] == 10:
            jobs[1].finished[:] = True
    assert seen == [3, 10]

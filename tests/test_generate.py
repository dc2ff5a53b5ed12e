"""Compiled generation (no retrace, seeds, greedy = the model's argmax, stopping) and the host side
(n_ctx rule, flag checks, stop strings, streaming)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import sample
from gpt2easy.errors import UserError
from gpt2easy.generate import Controls, Generator, cache_bucket, draw_function, prompt_bucket
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, model
from gpt2easy.tokens import ENDOFTEXT_ID

HP = HParams(n_vocab=80, n_ctx=40, n_embd=16, n_head=2, n_layer=2)


@pytest.fixture(scope="module")
def gpt2():
    return GPT2(HP, seed=4)


@pytest.fixture(scope="module")
def generator(gpt2):
    return Generator(gpt2, "fp32")


def run(generator, prompts, length, **controls):
    steps = list(generator.generate(np.array(prompts), length, Controls.make(**controls)))
    return np.stack([t for t, _ in steps], axis=1), np.stack([d for _, d in steps], axis=1)


def test_second_call_with_same_shapes_does_not_retrace(generator):
    run(generator, [[1, 2, 3]], 10, seed=(1, 0), top_k=5)
    compiled = generator.compiled[(1, cache_bucket(3 + 10 - 1, HP.n_ctx))]
    counts = (compiled.prefill.experimental_get_tracing_count(),
              compiled.step.experimental_get_tracing_count())  # fmt: skip
    # other controls, another prompt of a length in the same bucket, another length in the bucket
    run(generator, [[4, 5, 6, 7, 8]], 6, seed=(2, 0), temperature=0.5, top_p=0.9, penalty=1.3)
    run(generator, [[9]], 12, temperature=0.0, top_k=70, eos=3)
    assert compiled.prefill.experimental_get_tracing_count() == counts[0] == 1
    assert compiled.step.experimental_get_tracing_count() == counts[1] == 1


def test_the_first_token_comes_before_the_step_is_traced(gpt2):
    """The prompt pass draws the first token: a launch prints it before tracing and compiling the
    step, and a one-token generation never makes the step at all."""
    generator = Generator(gpt2, "fp32")
    steps = generator.generate(np.array([[1, 2, 3]]), 5, Controls.make(seed=(3, 0), top_k=5))
    first, _ = next(steps)
    compiled = generator.compiled[(1, cache_bucket(3 + 5 - 1, HP.n_ctx))]
    assert compiled.step.experimental_get_tracing_count() == 0
    rest = [t for t, _ in steps]
    assert compiled.step.experimental_get_tracing_count() == 1 and len(rest) == 4
    again = [t for t, _ in generator.generate(np.array([[1, 2, 3]]), 5,
                                              Controls.make(seed=(3, 0), top_k=5))]  # fmt: skip
    np.testing.assert_array_equal(np.stack([first, *rest]), np.stack(again))


def test_generators_share_one_draw_per_batch_size():
    """The draw holds no variables: every generator of a vocabulary size calls one traced draw
    per batch size (a second model loaded in the same process does not trace it again)."""
    hp = HParams(n_vocab=81, n_ctx=40, n_embd=16, n_head=2, n_layer=2)  # a draw of its own
    for seed in (5, 6):
        generator = Generator(GPT2(hp, seed=seed), "bf16")
        list(generator.generate(np.array([[1, 2, 3]]), 4, Controls.make(seed=(1, 0), top_k=5)))
        assert draw_function(hp.n_vocab).experimental_get_tracing_count() == 1
    list(generator.generate(np.array([[1, 2, 3], [4, 5, 6]]), 4, Controls.make(seed=(1, 0))))
    assert draw_function(hp.n_vocab).experimental_get_tracing_count() == 2


def test_warm_up_compiles_the_prompt_pass_and_the_step(gpt2):
    generator = Generator(gpt2, "fp32")
    generator.warm_up(2, 4, 6)
    compiled = generator.compiled[(2, cache_bucket(4 + 6 - 1, HP.n_ctx))]
    assert compiled.prefill.experimental_get_tracing_count() == 1
    assert compiled.step.experimental_get_tracing_count() == 1
    list(generator.generate(np.array([[1, 2, 3], [4, 5, 6]]), 6, Controls.make(top_k=3)))
    assert compiled.prefill.experimental_get_tracing_count() == 1  # same bucket: nothing new
    assert compiled.step.experimental_get_tracing_count() == 1


def test_buckets():
    assert [cache_bucket(n, 1024) for n in (1, 128, 129, 1000, 1024)] == [128, 128, 256, 1024, 1024]
    assert [prompt_bucket(n, 1024) for n in (1, 16, 17, 64, 65, 1000)] == [16, 16, 32, 64, 128, 1024]
    assert prompt_bucket(100, 128) == 128 and prompt_bucket(30, 40) == 32


def test_same_seed_same_tokens_whatever_ran_before(gpt2, generator):
    first, _ = run(generator, [[1, 2, 3]] * 2, 15, seed=(42, 0), top_k=20, top_p=0.9)
    run(generator, [[7, 7]], 9, seed=(3, 0))  # other work in between
    tf.random.uniform([5])  # and TF's global random state moved
    again, _ = run(Generator(gpt2, "fp32"), [[1, 2, 3]] * 2, 15, seed=(42, 0), top_k=20, top_p=0.9)
    other, _ = run(generator, [[1, 2, 3]] * 2, 15, seed=(43, 0), top_k=20, top_p=0.9)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1])  # rows of a batch draw differently


def test_greedy_generation_is_the_models_argmax(gpt2, generator):
    tokens, _ = run(generator, [[3, 1, 4, 1, 5]], 8, temperature=0.0)
    seq = [3, 1, 4, 1, 5]
    for _ in range(8):
        logits, _ = model(gpt2.params(), tf.constant([seq]), HP)
        seq.append(int(np.argmax(logits[0, -1])))
    assert tokens[0].tolist() == seq[5:]


def test_fills_the_whole_context(generator):
    tokens, _ = run(generator, [[0]], HP.n_ctx, temperature=0.0)  # positions 0 .. n_ctx - 1
    assert tokens.shape == (1, HP.n_ctx)
    with pytest.raises(ValueError):
        run(generator, [[0, 1]], HP.n_ctx)


def test_rows_finish_independently_at_eos(generator):
    greedy, _ = run(generator, [[1, 2], [30, 31]], 10, temperature=0.0)
    eos = int(greedy[0, 3])
    assert eos not in greedy[1].tolist()  # (the test's premise: row 1 never produces it)
    tokens, done = run(generator, [[1, 2], [30, 31]], 10, temperature=0.0, eos=eos)
    first = greedy[0].tolist().index(eos)
    assert tokens[0, : first + 1].tolist() == greedy[0, : first + 1].tolist()
    assert done[0, first:].all() and not done[0, :first].any()
    assert (tokens[0, first:] == eos).all()  # finished rows are padded with eos
    assert tokens[1].tolist() == greedy[1].tolist() and not done[1].any()


def test_caller_can_finish_rows_and_generation_stops_when_all_are_done(generator):
    finished = np.zeros(2, bool)
    steps = generator.generate(np.array([[1, 2], [3, 4]]), 20, Controls.make(), finished)
    n = 0
    for _ in steps:
        n += 1
        if n == 3:
            finished[:] = True
    assert n == 3


# --- the host side ---------------------------------------------------------------------------


def test_n_ctx_rule():
    assert sample.resolve_length(None, 512, 1024) == 512
    with pytest.raises(UserError, match="at most n_ctx"):
        sample.resolve_length(1025, 512, 1024)
    assert sample.fit_prompt(list(range(10)), 1020, 1024) == [5, 6, 7, 8, 9]
    assert sample.fit_prompt(list(range(5)), 1020, 1024) == list(range(5))
    assert sample.fit_prompt([7], 1024, 1024) == [7]  # unconditional default: 1 + 1024 - 1 used


def test_fit_prompt_warns(caplog):
    sample.fit_prompt(list(range(10)), 1020, 1024)
    assert "only the last 5 fit" in caplog.text


GOOD = dict(nsamples=4, batch_size=2, length=10, temperature=0.8, top_k=40, top_p=0.9,
            repetition_penalty=1.2, precision="bf16", seed=1)  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(nsamples=3), "multiple of --batch_size"),
        (dict(batch_size=0), "--batch_size must be at least 1"),
        (dict(nsamples=0), "--nsamples must be at least 1"),
        (dict(length=0), "--length must be at least 1"),
        (dict(length="ten"), "--length must be a number"),
        (dict(temperature=-1), "--temperature"),
        (dict(top_k=-1), "--top_k"),
        (dict(top_k=2.5), "whole number"),
        (dict(top_p=1.5), "--top_p"),
        (dict(repetition_penalty=0), "--repetition_penalty"),
        (dict(precision="fp16"), "--precision must be one of auto, fp32, bf16"),
        (dict(seed="x"), "--seed must be a number"),
    ],
)
def test_bad_flags(change, message):
    with pytest.raises(UserError, match=message):
        sample.check_flags(**{**GOOD, **change})


def test_good_flags_and_forever():
    sample.check_flags(**GOOD)
    sample.check_flags(**{**GOOD, "nsamples": 0}, forever_ok=True)


def test_pick_seed():
    assert sample.pick_seed(5) == 5
    seeds = {sample.pick_seed(None) for _ in range(5)}  # random when not given
    assert len(seeds) > 1 and all(0 <= s < 2**31 for s in seeds)
    assert 0 <= sample.pick_seed(-1) < 2**63


class FakeGenerator:
    """Plays given token rows, honouring eos and the caller's `finished` like Generator does."""

    def __init__(self, rows):
        self.rows = rows

    def generate(self, prompts, length, controls, finished):
        eos = int(controls.eos)
        done = np.zeros(len(self.rows), bool)
        for t in range(length):
            done |= finished
            if done.all():
                return
            tokens = np.array([r[t] if t < len(r) and not d else max(eos, 0)
                               for r, d in zip(self.rows, done, strict=True)])  # fmt: skip
            done |= tokens == eos
            yield tokens, done.copy()


@pytest.fixture(scope="module")
def encoder(vocab_dir):
    from gpt2easy.encoder import get_encoder

    return get_encoder(vocab_dir)


def texts_of(events, n):
    rows = [""] * n
    for row, piece, _ in events:
        rows[row] += piece
    return rows


def test_stop_strings_cut_rows_independently(encoder):
    a = encoder.encode("Hello world. THE END and more")
    b = encoder.encode("No stop here at all, none")
    settings = sample.Settings(length=len(a) + len(b), stop=("THE END",))
    events = list(sample.sample_batch(FakeGenerator([a, b]), encoder, [1], 2, settings, 0))
    assert texts_of(events, 2) == ["Hello world. ", "No stop here at all, none"]
    assert [(r, end) for r, _, end in events if end] == [(0, True), (1, True)]


def test_endoftext_ends_a_row_unless_disabled(encoder):
    a = encoder.encode("one two") + [ENDOFTEXT_ID] + encoder.encode(" three")
    on = sample.Settings(length=len(a))
    off = sample.Settings(length=len(a), stop_at_endoftext=False)
    assert texts_of(sample.sample_batch(FakeGenerator([a]), encoder, [1], 1, on, 0), 1) == [
        "one two"
    ]
    assert texts_of(sample.sample_batch(FakeGenerator([a]), encoder, [1], 1, off, 0), 1) == [
        "one two<|endoftext|> three"
    ]


def test_streaming_holds_back_only_what_a_stop_string_could_claim(encoder):
    ids = encoder.encode("abc STO xyz STOP tail")
    settings = sample.Settings(length=len(ids), stop=("STOP",))
    shown = ""
    for _, piece, _ in sample.sample_batch(FakeGenerator([ids]), encoder, [1], 1, settings, 0):
        assert "STOP" not in shown + piece
        shown += piece
    assert shown == "abc STO xyz "


def test_streaming_waits_for_whole_characters(encoder):
    ids = encoder.encode("caf\u00e9 \U0001f600!")
    pieces = [p for _, p, _ in sample.sample_batch(
        FakeGenerator([ids]), encoder, [1], 1, sample.Settings(length=len(ids)), 0)]  # fmt: skip
    assert "".join(pieces) == "caf\u00e9 \U0001f600!" and "\ufffd" not in "".join(pieces)


class Recorder:
    """An `out` for stream_samples that notes, for each write, how many steps had been generated."""

    def __init__(self, generator):
        self.generator, self.writes = generator, []

    def write(self, text):
        self.writes.append((self.generator.steps, text))

    def flush(self):
        pass


class CountingGenerator(FakeGenerator):
    def __init__(self, rows):
        super().__init__(rows)
        self.steps = 0

    def generate(self, prompts, length, controls, finished):
        for step in super().generate(prompts, length, controls, finished):
            self.steps += 1
            yield step


def test_batch_streams_the_first_sample_and_prints_the_others_when_done(encoder):
    """With a batch of 3: sample 1 is written piece by piece while the batch is being generated;
    samples 2 and 3 are written whole, after the last step, each under its own banner."""
    texts = ["one two three four five", "alpha beta gamma delta", "red green blue"]
    rows = [encoder.encode(t) for t in texts]
    length = max(map(len, rows))
    gen = CountingGenerator(rows)
    out = Recorder(gen)
    got = sample.stream_samples(gen, encoder, [1], 3, sample.Settings(length=length), 0, 4, out)
    assert got == texts and gen.steps == length
    first = [(step, text) for step, text in out.writes[1:] if text and not text.startswith("=")]
    first = first[: next(i for i, (_, t) in enumerate(first) if t.endswith("\n")) + 1]
    assert "".join(t for _, t in first) == texts[0] + "\n"
    assert len({step for step, _ in first}) >= 4 and first[0][0] < length  # streamed
    rest = out.writes[out.writes.index((length, sample.banner(5) + "\n")):]
    assert all(step == length for step, _ in rest)  # written after the batch was done
    assert texts[1] in [t for _, t in rest] and texts[2] in [t for _, t in rest]  # each whole
    assert "".join(t for _, t in rest) == "".join(f"{sample.banner(n)}\n{t}\n" for n, t in
                                                  [(5, texts[1]), (6, texts[2])])
    assert out.writes[0] == (0, sample.banner(4) + "\n")


def test_parse_stops():
    assert sample.parse_stops(None) == ()
    assert sample.parse_stops("\\n\\n") == ("\n\n",)
    assert sample.parse_stops(["END", 3]) == ("END", "3")
    with pytest.raises(UserError):
        sample.parse_stops("")


@pytest.mark.parametrize("prompts", [[[1, 2, 3]], [[1, 2, 3], [4, 5, 6]]], ids=["batch1", "batch2"])
def test_refresh_follows_the_models_new_weights(prompts):
    """Batch 1 runs on the prepared copies, batch 2 on the wide [in, out] matrices: both follow."""
    gpt = GPT2(HP, seed=5)
    for precision in ("fp32", "bf16"):
        gen = Generator(gpt, precision)
        before, _ = run(gen, prompts, 5, temperature=0.0)
        for name, var in gpt.weights.items():
            var.assign(GPT2(HP, seed=6).weights[name])
        gen.refresh()
        after, _ = run(gen, prompts, 5, temperature=0.0)
        fresh, _ = run(Generator(gpt, precision), prompts, 5, temperature=0.0)
        np.testing.assert_array_equal(after, fresh)
        assert not np.array_equal(before, after)
        for name, var in gpt.weights.items():
            var.assign(GPT2(HP, seed=5).weights[name])

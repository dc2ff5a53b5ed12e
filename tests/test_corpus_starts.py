"""Document starts are learned: in every window the training sampler can draw, the first token of
every document is preceded by <|endoftext|> (50256), also when the document opens a chunk (long
files, archives of the classic tool). Positions of the documents come from the reference encoder."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2easy.dataset import load_dataset, save_npz, with_start_token
from gpt2easy.encoder import ENDOFTEXT
from gpt2easy.windows import Sampler

EOT = 50256


def _documents(n: int) -> list[str]:
    return [f"Document {i} begins here. " + " ".join(f"word{i}x{j}" for j in range(40 + 7 * i)) + "."
            for i in range(n)]


def _layout(chunks_of_docs: list[list[str]], ref) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """The chunks as the trainer should see them and where each document starts (chunk, position):
    50256, then the documents of the chunk joined with 50256."""
    chunks, starts = [], []
    for c, docs in enumerate(chunks_of_docs):
        ids = [EOT]
        for k, doc in enumerate(docs):
            if k:
                ids.append(EOT)
            starts.append((c, len(ids)))
            ids += ref.encode(doc)
        chunks.append(ids)
    return chunks, starts


def _check_every_window(chunks: list[np.ndarray], starts, length: int) -> int:
    """Walk every window the sampler can draw (its own enumeration); return how many document
    starts were seen with a token before them (those are predicted from 50256)."""
    sampler = Sampler(chunks, seed=0)
    cumulative = sampler._windows(length)
    where = [(c, begin) for c, chunk in enumerate(sampler.chunks)  # window k -> (chunk, start)
             for begin in range(max(len(chunk) - length + 1, 0))]
    assert len(where) == sampler.window_count(length)
    seen = set()
    for k in range(sampler.window_count(length)):
        window = sampler._window(cumulative, k, length)  # what sample_batch would return for k
        c, begin = where[k]
        assert np.array_equal(window, sampler.chunks[c][begin:begin + length])
        for sc, pos in starts:
            if sc == c and begin < pos < begin + length:
                assert window[pos - begin - 1] == EOT, (c, pos, begin)
                seen.add((sc, pos))
    return len(seen)


def test_long_documents_each_a_chunk_start_after_50256(tmp_path, vocab_dir, ref):
    docs = _documents(4)
    for i, d in enumerate(docs):
        (tmp_path / f"{i}.txt").write_text(d, encoding="utf-8")
    chunks = load_dataset(tmp_path, vocab_dir, combine=10, workers=1, start_token=EOT)
    want, starts = _layout([[d] for d in docs], ref)
    assert [c.tolist() for c in chunks] == want
    assert _check_every_window(chunks, starts, 16) == len(docs)  # every start is predicted
    plain = load_dataset(tmp_path, vocab_dir, combine=10, workers=1)  # what encode.py writes
    assert [c.tolist() for c in plain] == [w[1:] for w in want]


def test_combined_small_documents_and_a_table(tmp_path, vocab_dir, ref):
    docs = _documents(6)
    for i, d in enumerate(docs[:3]):
        (tmp_path / f"{i}.txt").write_text(d, encoding="utf-8")
    (tmp_path / "3.csv").write_text("text\n" + "\n".join(f'"{d}"' for d in docs[3:]) + "\n",
                                    encoding="utf-8")
    chunks = load_dataset(tmp_path, vocab_dir, combine=500, workers=1, start_token=EOT)
    sizes = [len(d) for d in docs]
    groups, group, n = [], [], 0  # combine=500: a chunk ends after the document that reaches it
    for d, size in zip(docs, sizes, strict=True):
        group.append(d)
        n += size
        if n >= 500:
            groups.append(group)
            group, n = [], 0
        else:
            n += len(ENDOFTEXT)
    groups += [group] if group else []
    assert len(groups) > 1 and any(len(g) > 1 for g in groups)
    want, starts = _layout(groups, ref)
    assert [c.tolist() for c in chunks] == want
    assert _check_every_window(chunks, starts, 24) == len(docs)


def test_classic_archives_get_the_start_token_and_ours_stay_classic(tmp_path, ref):
    docs = _documents(3)
    classic = [np.array(ref.encode(d), np.int64) for d in docs]  # the classic encode.py's chunks
    np.savez_compressed(tmp_path / "classic.npz", *classic)
    chunks = load_dataset(tmp_path / "classic.npz", n_vocab=50257, start_token=EOT)
    want, starts = _layout([[d] for d in docs], ref)
    assert [c.tolist() for c in chunks] == want
    assert _check_every_window(chunks, starts, 12) == len(docs)
    # A chunk that already begins with 50256 gets no second one; an archive keeps no start token.
    save_npz(tmp_path / "ours.npz", [np.array(want[0])])
    assert load_dataset(tmp_path / "ours.npz", n_vocab=50257, start_token=EOT)[0].tolist() == want[0]
    with np.load(tmp_path / "classic.npz") as z:
        assert z["arr_0"].tolist() == ref.encode(docs[0])


def test_with_start_token_keeps_dtype_and_replaces_in_place():
    chunks = [np.array([1, 2], np.uint16), np.array([EOT, 3], np.uint16), np.array([70000, 1], np.int32),
              np.array([4], np.uint16)]
    out = with_start_token(chunks, EOT)
    assert out is chunks
    # a one-token chunk stays alone: a corpus of nothing else is refused as too small to learn from
    assert [c.tolist() for c in out] == [[EOT, 1, 2], [EOT, 3], [EOT, 70000, 1], [4]]
    assert [c.dtype for c in out] == [np.uint16, np.uint16, np.int32, np.uint16]


@pytest.mark.parametrize("n_vocab, start", [(50257, EOT), (300, None)])
def test_trainer_loads_chunks_with_the_start_token(tmp_path, n_vocab, start):
    from gpt2easy.hparams import HParams
    from gpt2easy.train_config import TrainConfig
    from gpt2easy.train_inputs import training_chunks

    save_npz(tmp_path / "d.npz", [np.array([5, 6, 7]), np.array([8, 9])])
    hp = HParams(n_vocab=n_vocab, n_ctx=8, n_embd=8, n_head=1, n_layer=1)
    cfg = TrainConfig(dataset=str(tmp_path / "d.npz"))
    chunks = [c.tolist() for c in training_chunks(cfg.dataset, cfg, tmp_path, hp)]
    assert chunks == ([[5, 6, 7], [8, 9]] if start is None else [[EOT, 5, 6, 7], [EOT, 8, 9]])


def test_trainer_passes_the_table_and_line_ending_flags(tmp_path, vocab_dir, ref):
    from gpt2easy.hparams import HParams
    from gpt2easy.train_config import TrainConfig
    from gpt2easy.train_inputs import training_chunks

    (tmp_path / "d.jsonl").write_text('{"body": "one\\r\\ntwo"}\n{"body": "three"}\n', encoding="utf-8")
    hp = HParams(n_vocab=50257, n_ctx=8, n_embd=8, n_head=1, n_layer=1)
    for keep, text in [(False, "one\ntwo"), (True, "one\r\ntwo")]:
        cfg = TrainConfig(dataset=str(tmp_path / "d.jsonl"), column="body", keep_line_endings=keep)
        chunks = training_chunks(cfg.dataset, cfg, vocab_dir, hp)
        assert [c.tolist() for c in chunks] == [[EOT, *ref.encode(text + ENDOFTEXT + "three")]]

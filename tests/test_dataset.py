"""Token archives, corpus encoding in pieces (same ids as whole), load_dataset, the Sampler."""

from __future__ import annotations

import json
import zipfile
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2easy import corpus, dataset
from gpt2easy.dataset import load_dataset, load_npz, save_npz
from gpt2easy.encoder import ENDOFTEXT
from gpt2easy.errors import UserError
from gpt2easy.windows import Sampler

# ---------------------------------------------------------------- archives


def test_npz_round_trip_uint16(tmp_path):
    chunks = [np.array([1, 2, 50256], dtype=np.int64), np.arange(1000) % 50257]
    save_npz(tmp_path / "a.npz", chunks)
    with np.load(tmp_path / "a.npz") as z:  # plain numpy reads it: the classic format
        assert z.files == ["arr_0", "arr_1"]
        assert z["arr_0"].dtype == np.uint16
    back = load_npz(tmp_path / "a.npz", n_vocab=50257)
    assert [c.tolist() for c in back] == [c.tolist() for c in chunks]
    assert all(c.dtype == np.uint16 for c in back)


def test_classic_int64_archive_loads_in_member_order(tmp_path):
    chunks = [np.arange(i, i + 5, dtype=np.int64) for i in range(12)]
    np.savez_compressed(tmp_path / "classic.npz", *chunks)  # what the classic encode.py writes
    back = load_npz(tmp_path / "classic.npz", n_vocab=50257)
    assert [c.tolist() for c in back] == [c.tolist() for c in chunks]  # arr_10 after arr_9


def test_out_of_range_ids_refused(tmp_path):
    np.savez(tmp_path / "big.npz", np.array([5, 50257]))
    with pytest.raises(UserError, match="50257.*outside the vocabulary.*encode.py"):
        load_npz(tmp_path / "big.npz", n_vocab=50257)
    np.savez(tmp_path / "neg.npz", np.array([-1, 3]))
    with pytest.raises(UserError, match="-1"):
        load_npz(tmp_path / "neg.npz", n_vocab=50257)


@pytest.mark.parametrize(
    "content",
    [b"just some text\n", b"PK\x03\x04 broken zip", b""],
    ids=["text", "broken-zip", "empty"],
)
def test_non_archive_refused_with_rerun_hint(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"not a token archive.*python encode\.py"):
        load_npz(path)


def test_wrong_members_refused(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(UserError, match="encode.py"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "f.npz", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(UserError, match="not a 1-D array of token ids"):
        load_npz(tmp_path / "f.npz")
    with zipfile.ZipFile(tmp_path / "nothing.npz", "w"):
        pass
    with pytest.raises(UserError, match="no token arrays"):
        load_npz(tmp_path / "nothing.npz")


def test_big_chunk_spills_to_disk_with_same_content(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "SPILL_BYTES", 1000)
    parts = [np.arange(i * 300, (i + 1) * 300) % 50257 for i in range(10)]
    with dataset.NpzWriter(tmp_path / "s.npz") as w:
        w.add(iter(parts), np.dtype(np.uint16))
        w.add([np.array([7])], np.dtype(np.uint16))
    back = load_npz(tmp_path / "s.npz")
    assert back[0].tolist() == np.concatenate(parts).tolist()
    assert back[1].tolist() == [7]


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out.npz"
    with pytest.raises(RuntimeError), dataset.NpzWriter(out) as w:
        w.add([np.array([1, 2])], np.dtype(np.uint16))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- corpus encoding


def test_safe_cuts_keep_ids(fast, ref):
    text = "Word  \n\n  word.\n\tx y\r\nlast's\u00a0one  "
    for i in range(1, len(text)):
        cut = corpus.safe_cut(text[:i])
        if cut:
            assert ref.encode(text[:cut]) + ref.encode(text[cut:]) == ref.encode(text), cut


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "Zz", "é", "日本", "🤖", "1", "'s", ".", ",", "<|endoftext|>"])
        | st.sampled_from([" ", "  ", "\n", "\n\n", "\r\n", "\t", "\u00a0", "\u3000"])
        | st.characters(),
        max_size=40,
    ).map("".join)
)
def test_every_safe_cut_keeps_ids(ref, text):
    whole = ref.encode(text)
    for i in range(1, len(text)):
        if corpus.safe_cut(text[: i + 1], i) == i:
            assert ref.encode(text[:i]) + ref.encode(text[i:]) == whole, i


def test_multibyte_text_read_in_tiny_blocks(tmp_path, fast):
    text = "Ünïcödé wörds 日本語 🤖🎉 and\r\nlines \u00a0\n\n  spaced  out\n" * 300
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8", newline="")
    exact = dict(block_bytes=997, workers=1, keep_line_endings=True)
    assert _stream_ids([path], fast, **exact) == [fast.encode(text)]
    path.write_text(text, encoding="utf-16", newline="")
    assert _stream_ids([path], fast, **exact, encoding="utf-16") == [fast.encode(text)]
    assert _stream_ids([path], fast, block_bytes=997, workers=1, encoding="utf-16") == [
        fast.encode(text.replace("\r\n", "\n"))
    ]


def _stream_ids(files, encoder, **kw):
    chunks, part = [], []
    for ids, ends in corpus.encode_stream(files, encoder, **kw):
        part += ids.tolist()
        if ends:
            chunks.append(part)
            part = []
    return chunks


def test_small_blocks_give_the_ids_of_whole_files(fast, shakespeare_dir):
    files = sorted(shakespeare_dir.glob("*.txt"))[:6]
    whole = [fast.encode(f.read_text(encoding="utf-8")) for f in files]
    stats = corpus.Stats()
    chunks = _stream_ids(files, fast, combine=0, block_bytes=4096, workers=1, stats=stats)
    assert chunks == whole
    assert (stats.files, stats.documents, stats.chunks) == (6, 6, 6)
    assert stats.tokens == sum(map(len, whole))


def test_workers_give_identical_chunks(fast, shakespeare_dir):
    files = sorted(shakespeare_dir.glob("*.txt"))[:8]
    one = _stream_ids(files, fast, combine=200000, block_bytes=8192, workers=1)
    two = _stream_ids(files, fast, combine=200000, block_bytes=8192, workers=2)
    assert one == two
    assert len(one) < 8  # files were combined


def test_combine_joins_files_like_the_classic_tool(tmp_path, fast, ref):
    texts = ["first file.", "second <|endoftext|> file.", "third file\n", "fourth."]
    files = []
    for i, t in enumerate(texts):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(t, encoding="utf-8")
    # combine=20: chunk 1 = files 0+1 (11 + 13 + 26 chars), chunk 2 = files 2+3.
    stats = corpus.Stats()
    chunks = _stream_ids(files, fast, combine=20, workers=1, stats=stats)
    assert chunks == [
        ref.encode(texts[0] + ENDOFTEXT + texts[1]),
        ref.encode(texts[2] + ENDOFTEXT + texts[3]),
    ]
    assert chunks[0].count(50256) == 2
    assert stats.documents == 5
    # Legacy: exactly the classic text stream (separator as text, BPE-merged with neighbours).
    legacy = _stream_ids(files, fast, combine=20, workers=1, legacy_endoftext=True)
    assert legacy == [
        ref.encode(texts[0] + ENDOFTEXT + texts[1], legacy_endoftext=True),
        ref.encode(texts[2] + ENDOFTEXT + texts[3], legacy_endoftext=True),
    ]
    assert 50256 not in sum(legacy, [])
    # A last chunk below `combine`: the classic tool leaves a separator at its end; we don't.
    everything = ENDOFTEXT.join(texts)
    assert _stream_ids(files, fast, combine=1000, workers=1) == [ref.encode(everything)]
    assert _stream_ids(files, fast, combine=1000, workers=1, legacy_endoftext=True) == [
        ref.encode(everything + ENDOFTEXT, legacy_endoftext=True)
    ]


def test_file_ending_with_separator_gets_no_second_one(tmp_path, fast):
    (tmp_path / "a.txt").write_text("a" + ENDOFTEXT, encoding="utf-8")
    (tmp_path / "b.txt").write_text("b", encoding="utf-8")
    stats = corpus.Stats()
    chunks = _stream_ids(corpus.list_files(tmp_path), fast, workers=1, stats=stats)
    assert chunks == [fast.encode("a" + ENDOFTEXT + "b")]
    assert stats.documents == 2


def test_undecodable_file_names_offset(tmp_path, fast):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text " * 1000 + b"\xff\xfe oops")
    with pytest.raises(UserError, match=r"bad\.txt.*0xff at byte offset 10000.*--encoding"):
        list(corpus.encode_stream([path], fast, workers=1, block_bytes=4096))
    path.write_bytes(b"abc\x00def")
    with pytest.raises(UserError, match="NUL.*offset 3"):
        list(corpus.encode_stream([path], fast, workers=1))


def test_list_files_is_sorted_and_skips_hidden(tmp_path):
    for name in ["b/2.txt", "b/1.txt", "a.txt", ".git/x", "c/.hidden"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in corpus.list_files(tmp_path)]
    assert names == ["a.txt", "b/1.txt", "b/2.txt"]
    assert [p.name for p in corpus.list_files(str(tmp_path / "b" / "*.txt"))] == ["1.txt", "2.txt"]
    with pytest.raises(UserError, match="matches no files"):
        corpus.list_files(str(tmp_path / "*.nothing"))
    with pytest.raises(UserError, match="does not exist"):
        corpus.list_files(tmp_path / "missing.txt")


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_text_folder_glob_and_npz(tmp_path, vocab_dir, fast):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("Hello world", encoding="utf-8")
    (tmp_path / "t" / "b.txt").write_text("Hello, my dog is cute", encoding="utf-8")
    expected = [fast.encode("Hello world" + ENDOFTEXT + "Hello, my dog is cute")]
    for path in [tmp_path / "t", str(tmp_path / "t" / "*.txt")]:
        chunks = load_dataset(path, vocab_dir, combine=50000, workers=1)
        assert [c.tolist() for c in chunks] == expected
        assert chunks[0].dtype == np.uint16
    save_npz(tmp_path / "t.npz", [np.array(expected[0])])
    chunks = load_dataset(tmp_path / "t.npz", None, n_vocab=50257)  # no encoder needed
    assert [c.tolist() for c in chunks] == expected
    with pytest.raises(UserError, match="outside the vocabulary"):
        load_dataset(tmp_path / "t.npz", None, n_vocab=100)


def test_load_dataset_empty_is_an_error(tmp_path, vocab_dir):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_dataset(tmp_path / "empty.txt", vocab_dir)


# ---------------------------------------------------------------- Sampler


def test_sampler_stays_inside_chunks_and_reaches_every_window():
    chunks = [np.arange(0, 5), np.arange(100, 103), np.arange(200, 201), np.arange(300, 308)]
    sampler = Sampler(chunks, seed=0)
    length = 3
    windows = {(c, s) for c, ch in enumerate(chunks) for s in range(len(ch) - length + 1)}
    assert sampler.window_count(length) == len(windows) == 3 + 1 + 0 + 6
    seen = Counter()
    for _ in range(2000):
        w = sampler.sample(length)
        assert len(w) == length
        assert w[-1] - w[0] == length - 1  # consecutive ids: never across a chunk boundary
        seen[int(w[0])] += 1
    starts = {int(chunks[c][s]) for c, s in windows}
    assert set(seen) == starts
    assert min(seen.values()) > 2000 / len(starts) / 2  # roughly uniform


def test_sampler_max_length_and_too_long_windows():
    sampler = Sampler([np.arange(10), np.arange(4)], seed=1)
    assert sampler.max_length == 10
    assert sampler.sample(10).tolist() == list(range(10))
    with pytest.raises(ValueError, match="longest chunk has 10"):
        sampler.sample(11)


def test_sampler_state_restores_the_same_draws():
    chunks = [np.arange(1000), np.arange(5000, 5600)]
    a = Sampler(chunks, seed=123)
    a.sample_batch(4, 32)
    state = json.loads(json.dumps(a.get_state()))  # survives a JSON file
    expected = [a.sample_batch(4, 32).tolist() for _ in range(5)]
    b = Sampler(chunks, seed=999)
    b.set_state(state)
    assert [b.sample_batch(4, 32).tolist() for _ in range(5)] == expected
    batch = Sampler(chunks, seed=123).sample_batch(4, 32)
    assert batch.shape == (4, 32) and batch.dtype == np.int32
    assert batch.tolist() == Sampler(chunks, seed=123).sample_batch(4, 32).tolist()

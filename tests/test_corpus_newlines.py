"""Line endings: `\\r\\n` and a lone `\\r` become `\\n` by default, as Python's text mode (the classic
tool's `open(path, 'r')`) makes them, also across the 1 MB read blocks; `keep_line_endings` keeps
the bytes. The oracle is Python's own text-mode read and the plain-Python reference encoder."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2easy import corpus
from gpt2easy.dataset import encode_to_npz, load_dataset, load_npz
from gpt2easy.encoder import ENDOFTEXT

TEXT = ("line one\r\nline two\rline three\n\r\n\r\r\nend\r" * 7) + "tail\r"


def _text_mode(path, encoding="utf-8") -> str:
    with open(path, encoding=encoding) as f:  # universal newlines: what the classic tool read
        return f.read()


def _ids(files, encoder, **kw):
    chunks, part = [], []
    for ids, ends in corpus.encode_stream(files, encoder, workers=1, **kw):
        part += ids.tolist()
        if ends:
            chunks.append(part)
            part = []
    return chunks


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_blocks_normalise_like_text_mode_at_every_block_size(tmp_path, encoding):
    path = tmp_path / "w.txt"
    path.write_bytes(TEXT.encode(encoding))
    assert "\r" not in _text_mode(path, encoding)
    for block in [*range(1, 12), 13, 64, 1 << 20]:  # every split of "\r\n" between two blocks
        blocks = list(corpus.read_text_blocks(path, encoding, block))
        assert "".join(t for t, _ in blocks) == _text_mode(path, encoding), block
        assert sum(n for _, n in blocks) == path.stat().st_size
        kept = corpus.read_text_blocks(path, encoding, block, keep_line_endings=True)
        assert "".join(t for t, _ in kept) == TEXT


def test_crlf_split_across_a_block_boundary_is_one_newline(tmp_path, fast, ref):
    path = tmp_path / "split.txt"
    path.write_bytes(b"a" * 9 + b"\r\n" + b"b c\r\n")  # block 10 ends between \r and \n
    blocks = [t for t, _ in corpus.read_text_blocks(path, "utf-8", 10)]
    assert blocks[0] == "a" * 9 and "".join(blocks) == "a" * 9 + "\nb c\n"
    assert _ids([path], fast, block_bytes=10) == [ref.encode("a" * 9 + "\nb c\n")]


def test_encoded_ids_are_those_of_the_text_mode_text(tmp_path, fast, ref):
    path = tmp_path / "win.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    for block in (5, 7, 4096):
        assert _ids([path], fast, block_bytes=block) == [ref.encode(_text_mode(path))]
        assert _ids([path], fast, block_bytes=block, keep_line_endings=True) == [ref.encode(TEXT)]
    assert 201 not in ref.encode(_text_mode(path))  # 201 is "\r": gone
    assert 201 in ref.encode(TEXT)


def _classic_chunks(files, combine, encoder):
    """src/load_dataset.py of the classic tool (classic-tools.md 2.1), text read in text mode."""
    chunks, raw_text = [], ""
    for path in files:
        with open(path, encoding="utf-8") as fp:
            raw_text += fp.read()
        if len(raw_text) >= combine:
            chunks.append(encoder.encode(raw_text, legacy_endoftext=True))
            raw_text = ""
        else:
            raw_text += ENDOFTEXT
    if raw_text:
        chunks.append(encoder.encode(raw_text, legacy_endoftext=True))
    return chunks


def test_legacy_ids_equal_the_classic_tool_on_windows_text(tmp_path, fast, ref):
    texts = ["Windows\r\nfile\r\n", "old Mac\rfile\r", "mixed\r\n\rend", "unix\nfile\n" * 3]
    files = []
    for i, t in enumerate(texts):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_bytes(t.encode("utf-8"))
    for combine in (0, 12, 30, 1000):
        ours = _ids(files, fast, combine=combine, legacy_endoftext=True, block_bytes=3)
        assert ours == _classic_chunks(files, combine, ref), combine
    kept = _ids(files, fast, combine=1000, legacy_endoftext=True, keep_line_endings=True)
    assert kept != _classic_chunks(files, 1000, ref)


def test_combine_counts_characters_after_normalising(tmp_path, fast):
    (tmp_path / "a.txt").write_bytes(b"x\r\n" * 10)  # 20 characters read, 30 bytes
    (tmp_path / "b.txt").write_bytes(b"y")
    assert len(_ids(corpus.list_files(tmp_path), fast, combine=21)) == 1
    assert len(_ids(corpus.list_files(tmp_path), fast, combine=21, keep_line_endings=True)) == 2


def test_load_dataset_and_encode_to_npz_normalise_by_default(tmp_path, vocab_dir, fast, ref):
    path = tmp_path / "w.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    want = ref.encode(_text_mode(path))
    assert load_dataset(path, vocab_dir, workers=1)[0].tolist() == want
    assert load_dataset(path, vocab_dir, workers=1, keep_line_endings=True)[0].tolist() == ref.encode(TEXT)
    encode_to_npz(path, tmp_path / "w.npz", fast, workers=1)
    assert np.concatenate(load_npz(tmp_path / "w.npz")).tolist() == want

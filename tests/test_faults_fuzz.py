"""Fuzzing (issue 7): the encoder round-trips anything, and the token-archive loader meets garbage
(random bytes, truncated or mutated real archives, odd members, dtypes and shapes) with nothing
but our one-line UserError.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2easy.dataset import load_dataset, load_npz, save_npz
from gpt2easy.encoder import ENDOFTEXT, fix_surrogates
from gpt2easy.errors import UserError

N_VOCAB = 50257


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- encoder ------------------------------------------------------------------------------------

# Every code point but surrogates, plus the pieces the tokenizer's regex cares about.
any_text = st.lists(
    st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.characters(max_codepoint=0x7F),
        st.sampled_from([ENDOFTEXT, "<|endoftext", "|>", "'s", "'LL", "\r\n", "  ", "\u200d",
                         "e\u0301", "\ufeff", "\x00", "\U0010ffff", "🏳️‍🌈"]),
    ),
    max_size=60,
).map("".join)


@fuzz(300)
@given(any_text)
def test_encoder_round_trips_arbitrary_unicode(fast, ref, text):
    for legacy in (False, True):
        ids = fast.encode(text, legacy_endoftext=legacy)
        assert all(0 <= i < N_VOCAB for i in ids)
        assert fast.decode(ids) == text
        assert ref.encode(text, legacy_endoftext=legacy) == ids
    assert (ENDOFTEXT in text) == (fast.eot_token in fast.encode(text))


@fuzz(300)
@given(st.binary(max_size=200))
def test_encoder_round_trips_bytes_decoded_with_replacement(fast, ref, data):
    text = data.decode("utf-8", errors="replace")
    ids = fast.encode(text)
    assert fast.decode(ids) == text
    assert ref.encode(text) == ids
    assert fast.encode_to_numpy(text).tolist() == ids
    # The raw bytes, decoded byte-per-character (latin-1), round-trip too.
    latin = data.decode("latin-1")
    assert fast.decode(fast.encode(latin)) == latin


@fuzz(150)
@given(st.text(st.characters(categories=["Cs", "L", "Zs", "P"]), max_size=30))
def test_lone_surrogates_are_replaced_not_fatal(fast, text):
    ids = fast.encode(text)
    assert fast.decode(ids) == fix_surrogates(text)


@fuzz(200)
@given(st.lists(st.integers(0, N_VOCAB - 1), max_size=50))
def test_any_id_sequence_decodes_and_streams(fast, ids):
    text = fast.decode(ids)
    assert isinstance(text, str)
    stream = fast.stream_decoder()
    assert "".join(stream.feed([i]) for i in ids) + stream.flush() == text


# --- the token-archive loader -------------------------------------------------------------------


def expect_user_error(path, n_vocab: int | None = N_VOCAB) -> str:
    """Load `path`; it must fail with a one-line UserError that names the file."""
    with pytest.raises(UserError) as e:
        load_npz(path, n_vocab)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def load_or_refuse(path, n_vocab: int = N_VOCAB) -> list[np.ndarray] | None:
    """Load `path`: either valid token chunks or our UserError, never another exception."""
    try:
        chunks = load_npz(path, n_vocab)
    except UserError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return None
    for c in chunks:
        assert c.ndim == 1 and c.dtype.kind in "iu"
        assert c.size == 0 or (int(c.min()) >= 0 and int(c.max()) < n_vocab)
    return chunks


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def real_archives(tmp_path_factory) -> list[bytes]:
    """Valid archives in every flavour we read: ours (uint16, stored), classic (int64 savez),
    compressed."""
    folder = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, N_VOCAB, n) for n in (40, 7, 1)]
    save_npz(folder / "ours.npz", chunks)
    np.savez(folder / "classic.npz", *[c.astype(np.int64) for c in chunks])
    np.savez_compressed(folder / "compressed.npz", *[c.astype(np.int32) for c in chunks])
    return [(folder / f"{n}.npz").read_bytes() for n in ("ours", "classic", "compressed")]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> list[bytes]:
    return real_archives(tmp_path_factory)


@fuzz(300)
@given(st.one_of(st.binary(max_size=600),
                 st.binary(max_size=600).map(lambda b: b"PK\x03\x04" + b),
                 st.binary(max_size=600).map(lambda b: b"\x93NUMPY\x01\x00" + b)))
def test_random_bytes_give_our_error(tmp_path, data):
    path = tmp_path / "random.npz"
    path.write_bytes(data)
    expect_user_error(path)


@fuzz(300)
@given(st.data())
def test_truncated_archives_give_our_error(tmp_path, archives, data):
    original = data.draw(st.sampled_from(archives))
    cut = data.draw(st.integers(0, len(original) - 1))
    path = tmp_path / "cut.npz"
    path.write_bytes(original[:cut])
    expect_user_error(path)


@fuzz(500)
@given(st.data())
def test_mutated_archives_load_or_give_our_error(tmp_path, archives, data):
    blob = bytearray(data.draw(st.sampled_from(archives)))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[i] ^= 1 << data.draw(st.integers(0, 7))  # bit flip
        else:
            blob[i] = data.draw(st.integers(0, 255))  # byte overwrite
    path = tmp_path / "mutated.npz"
    path.write_bytes(bytes(blob))
    load_or_refuse(path)


def test_every_single_truncation_point(tmp_path, archives):
    """Exhaustive, not sampled: the loader refuses the archive cut at every byte."""
    path = tmp_path / "cut.npz"
    ours = archives[0]
    for cut in range(len(ours)):
        path.write_bytes(ours[:cut])
        expect_user_error(path)


BAD_ARRAYS = {
    "float": np.ones(4),
    "float32 ids": np.arange(4, dtype=np.float32),
    "bool": np.ones(4, bool),
    "complex": np.ones(4, complex),
    "string": np.array(["a", "b"]),
    "bytes": np.array([b"ab"]),
    "structured": np.zeros(3, dtype=[("id", "<i4")]),
    "object": np.array([1, "a"], dtype=object),
    "0-D": np.array(5),
    "2-D": np.ones((2, 3), np.int32),
    "3-D": np.ones((1, 1, 1), np.uint16),
    "int8 negative": np.array([1, -1, 2], np.int8),
    "int64 negative": np.array([-(2**40)], np.int64),
    "id = n_vocab": np.array([1, N_VOCAB], np.int32),
    "uint64 max": np.array([2**64 - 1], np.uint64),
    "datetime": np.array(["2020-01-01"], dtype="datetime64[D]"),
}


@pytest.mark.parametrize("kind", BAD_ARRAYS)
def test_bad_member_arrays_are_named(tmp_path, kind):
    path = tmp_path / "bad.npz"
    good = npy_bytes(np.arange(5, dtype=np.uint16))
    path.write_bytes(zip_bytes({"arr_0.npy": good, "arr_1.npy": npy_bytes(BAD_ARRAYS[kind])}))
    message = expect_user_error(path)
    assert "arr_1" in message


BAD_ZIPS = {
    "no members": {},
    "text member only": {"readme.txt": b"hello"},
    "text member beside tokens": {"arr_0.npy": npy_bytes(np.arange(3)), "notes.txt": b"hi"},
    "empty member": {"arr_0.npy": b""},
    "pickle member": {"arr_0.npy": b"\x80\x04K\x01."},
    "npy header only": {"arr_0.npy": npy_bytes(np.arange(100))[:128]},
    "huge declared shape": {"arr_0.npy": npy_bytes(np.arange(5)).replace(
        b"(5,)", b"(999999999999,)")},
    "overflowing shape": {"arr_0.npy": npy_bytes(np.arange(5)).replace(
        b"(5,)", b"(99999999999999999999,)")},
    "negative shape": {"arr_0.npy": npy_bytes(np.arange(5)).replace(b"(5,)", b"(-5,)")},
    "nested zip": {"arr_0.npy": zip_bytes({"arr_0.npy": npy_bytes(np.arange(3))})},
}


@pytest.mark.parametrize("kind", BAD_ZIPS)
def test_bad_zip_members_are_refused(tmp_path, kind):
    path = tmp_path / "bad.npz"
    path.write_bytes(zip_bytes(BAD_ZIPS[kind]))
    expect_user_error(path)


def _patch_central_directory(blob: bytes, offset: int, value: bytes) -> bytes:
    at = blob.index(b"PK\x01\x02") + offset
    return blob[:at] + value + blob[at + len(value):]


@pytest.mark.parametrize("kind", ["unknown compression", "encrypted", "bad crc"])
def test_zip_features_we_cannot_read_are_refused(tmp_path, kind):
    blob = zip_bytes({"arr_0.npy": npy_bytes(np.arange(5))})
    if kind == "unknown compression":
        blob = _patch_central_directory(blob, 10, b"\x63\x00")
    elif kind == "encrypted":
        blob = _patch_central_directory(blob, 8, b"\x01\x00")
    else:
        blob = _patch_central_directory(blob, 16, b"\x00\x00\x00\x00")
    path = tmp_path / "odd.npz"
    path.write_bytes(blob)
    expect_user_error(path)


def test_odd_member_names_and_empty_members_are_fine(tmp_path):
    """The classic loader took every member whatever its name; so do we. Empty ones are dropped."""
    path = tmp_path / "named.npz"
    path.write_bytes(zip_bytes({"tokens.npy": npy_bytes(np.array([5, 6, 7], np.int64)),
                                "arr_9.npy": npy_bytes(np.zeros(0, np.uint16)),
                                "no_suffix": npy_bytes(np.array([8], np.uint16))}))
    chunks = load_dataset(path, n_vocab=N_VOCAB)
    assert sorted(c.tolist() for c in chunks) == [[5, 6, 7], [8]]


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "only empty members"])
def test_unloadable_paths_are_one_line_errors(tmp_path, kind):
    path = tmp_path / "data.npz"
    if kind == "folder":
        path.mkdir()
        (path / "inner.npz").write_bytes(b"")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "only empty members":
        np.savez(path, np.zeros(0, np.int64), np.zeros(0, np.int64))
    with pytest.raises(UserError) as e:
        load_dataset(path, n_vocab=N_VOCAB)
    assert "\n" not in str(e.value)

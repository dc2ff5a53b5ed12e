"""Table-shaped corpora: `.csv` and `.jsonl` files whose rows are documents.

One row is one document, exactly as one text file is: the corpus joins documents with
`<|endoftext|>` (see corpus.py). Files are read row by row (one row in memory at a time), so a
table of any size streams like a text file.

CSV (`.csv`, RFC 4180 as Python's `csv` module reads it, comma-separated, strict quoting):
  * `column`: a header name, or a 0-based index; default: the table's only column (a table with
    several columns must name one).
  * `header`: "yes", "no" or "auto" (default). auto: the first row is the header when `column` is a
    name, or when every cell of the first row is one word of letters, digits and `_` that does not
    start with a digit (`text`, `Body`, `tweet_text`); otherwise the first row is a document.
  * Every row must have as many fields as the first one (an unquoted comma inside a text shows up
    here, instead of silently taking the wrong field).
JSONL (`.jsonl`): one JSON object per line; `column` is the field holding the text (default
  `text`); a line that is a bare JSON string is the document itself; blank lines are skipped.

In both, empty documents are skipped; `\\r\\n` and `\\r` inside a document become `\\n` unless
`keep_line_endings`; a byte order mark at the start of the file is dropped. Malformed rows, a
missing column, a non-string value and a table without documents are UserErrors naming the file
and the row (and line).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .options import opt

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".jsonl")
HEADER_MODES = ("auto", "yes", "no")
JSONL_DEFAULT_COLUMN = "text"
_NAME = re.compile(r"[A-Za-z_]\w{0,63}", re.ASCII)
_HINT = "if it is text, pass its encoding, e.g. --encoding latin-1"


def is_table(path: str | Path) -> bool:
    """Whether the file is read as a table (by its extension, case-insensitive)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def normalise_newlines(text: str) -> str:
    """`\\r\\n` and a lone `\\r` become `\\n` (what Python's text mode does when reading)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def header_mode(header: str | bool | None) -> str:
    """'auto', 'yes' or 'no' from a flag value (also True/False, as python-fire passes them)."""
    if header is None:
        return "auto"
    if isinstance(header, bool):
        return "yes" if header else "no"
    mode = {"true": "yes", "false": "no"}.get(str(header).lower(), str(header).lower())
    if mode not in HEADER_MODES:
        raise UserError(f"--header must be auto, yes or no, not {header!r}")
    return mode


def column_index(column: str | int | None) -> int | None:
    """The 0-based index a column flag names (an int or a string of digits), else None."""
    if isinstance(column, bool):
        raise UserError(f"--column needs a name or a 0-based index, not {column}")
    if isinstance(column, int):
        if column < 0:
            raise UserError(f"--column index must be >= 0, not {column}")
        return column
    if isinstance(column, str) and column.isdigit():
        return int(column)
    return None


def read_documents(
    path: Path,
    encoding: str = "utf-8",
    *,
    column: str | int | None = None,
    header: str | bool | None = "auto",
    keep_line_endings: bool = False,
) -> Iterator[tuple[str, int]]:
    """The documents of a `.csv` or `.jsonl` file as (text, bytes read since the last one).

    Skipped rows (header, blank lines, empty cells) come as ("", bytes), so that the bytes add up
    to the file's size for progress bars; they are not documents.
    """
    reader = _read_jsonl if Path(path).suffix.lower() == ".jsonl" else _read_csv
    count = 0
    for text, nbytes in reader(path, encoding, column, header_mode(header)):
        if not keep_line_endings:
            text = normalise_newlines(text)
        if text:
            count += 1
        yield text, nbytes  # empty ones too: their bytes count for the progress bar
    if not count:
        raise UserError(f"{path}: the table holds no documents (no non-empty rows)")


class _Source:
    """A text stream over a binary file that knows how many bytes it has consumed."""

    def __init__(self, path: Path, encoding: str, newline: str):
        try:
            self.raw = open(path, "rb")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            self.text = io.TextIOWrapper(self.raw, encoding=encoding, errors="strict", newline=newline)
        except LookupError:
            self.raw.close()
            raise UserError(f"unknown --encoding {encoding!r} (try utf-8 or latin-1)") from None
        self.path, self.encoding, self.reported, self.calls = path, encoding, 0, 0

    def progress(self) -> int:
        """Bytes consumed since the last report (checked every 256 calls: tell() costs a system
        call, rows are many)."""
        self.calls += 1
        if self.calls % 256:
            return 0
        pos = self.raw.tell()
        n, self.reported = pos - self.reported, pos
        return n

    def rest(self) -> int:
        return max(0, Path(self.path).stat().st_size - self.reported)

    def decode_error(self, e: UnicodeDecodeError) -> UserError:
        # The decoder was given the bytes up to the file position (plus any it held back).
        offset = self.raw.tell() - len(e.object) + e.start
        return UserError(f"{self.path}: cannot decode byte 0x{e.object[e.start]:02x} at byte offset "
                         f"{offset} as {self.encoding} (binary file?); {_HINT}")

    def close(self) -> None:
        self.text.close()


def _nul_error(path: Path, where: str) -> UserError:
    return UserError(f"{path}: NUL character {where}: a binary file, or text in another "
                     f"encoding; {_HINT}")


def _read_csv(path: Path, encoding: str, column, header: str) -> Iterator[tuple[str, int]]:
    csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))  # a document may be long
    src = _Source(path, encoding, newline="")  # the csv module finds the line breaks
    reader = csv.reader(src.text, strict=True)
    index, width, row_no, line = column_index(column), None, 0, 1
    try:
        while True:
            line = reader.line_num + 1  # where the next row starts
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise UserError(f"{path}: malformed CSV in row {row_no + 1} (line {line}): {e}; quote "
                                f"fields holding commas, quotes or line breaks") from None
            except UnicodeDecodeError as e:
                raise src.decode_error(e) from None
            if not row:  # a blank line
                yield "", src.progress()
                continue
            row_no += 1
            if row_no == 1 and row[0].startswith("\ufeff"):
                row[0] = row[0][1:]
            for cell in row:
                if "\x00" in cell:
                    raise _nul_error(path, f"in row {row_no} (line {line})")
            if width is None:
                width = len(row)
                index = _pick_column(path, row, column, index)
                if _is_header(path, row, column, index, header):
                    yield "", src.progress()
                    continue
            if len(row) != width:
                raise UserError(f"{path}: row {row_no} (line {line}) has {len(row)} fields, the first "
                                f"row {width}; quote fields holding commas")
            yield row[index], src.progress()
        if width is None:
            raise UserError(f"{path}: the table is empty (no rows)")
        yield "", src.rest()
    finally:
        src.close()


def _pick_column(path: Path, first: list[str], column, index: int | None) -> int:
    if index is not None:
        if index >= len(first):
            raise UserError(f"{path}: no column {index} (0-based): the first row has {len(first)} "
                            f"fields")
        return index
    if column is None:
        if len(first) != 1:
            raise UserError(f"{path}: {len(first)} columns ({_show(first)}): choose the text with "
                            f"--column NAME or --column INDEX (0-based)")
        return 0
    if column not in first:
        raise UserError(f"{path}: no column {column!r} in the header row ({_show(first)})")
    return first.index(column)


def _is_header(path: Path, first: list[str], column, index: int, header: str) -> bool:
    named = column is not None and column_index(column) is None
    if header == "no":
        if named:
            raise UserError(f"--column {column!r} names a header column, but --header no says "
                            f"{path} has none; give a 0-based index instead")
        return False
    if header == "yes" or named:
        return True
    if all(_NAME.fullmatch(c) for c in first):
        logger.debug("%s: first row %s taken as the header (--header no keeps it as a document)",
                    path, _show(first))
        return True
    return False


def _show(cells: list[str]) -> str:
    shown = ", ".join(repr(c[:40]) for c in cells[:8])
    return shown + (", ..." if len(cells) > 8 else "")


def _read_jsonl(path: Path, encoding: str, column, header: str) -> Iterator[tuple[str, int]]:
    del header  # CSV only
    key = JSONL_DEFAULT_COLUMN if column is None else str(column)
    src = _Source(path, encoding, newline="\n")  # a JSON line may end in \r\n: whitespace
    line_no = 0
    try:
        while True:
            try:
                line = src.text.readline()
            except UnicodeDecodeError as e:
                raise src.decode_error(e) from None
            if not line:
                break
            line_no += 1
            if line_no == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if not line.strip():
                yield "", src.progress()
                continue
            where = f"line {line_no}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: {where} is not valid JSON ({e.msg} at column {e.colno}); "
                                f"each line must be one JSON object") from None
            if isinstance(value, dict):
                if key not in value:
                    raise UserError(f"{path}: {where} has no field {key!r} (it has: "
                                    f"{_show(list(value))}); choose one with --column")
                value = value[key]
            elif not isinstance(value, str):
                raise UserError(f"{path}: {where} is a JSON {type(value).__name__}, not an object "
                                f"with a {key!r} field")
            if not isinstance(value, str):
                raise UserError(f"{path}: {where}: field {key!r} is "
                                f"{'null' if value is None else 'a JSON ' + type(value).__name__},"
                                f" not a string")
            if "\x00" in value:
                raise _nul_error(path, where)
            yield value, src.progress()
        if line_no == 0:
            raise UserError(f"{path}: the table is empty (no rows)")
        yield "", src.rest()
    finally:
        src.close()


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorpusFlags:
    """How text and tables are read: the flags every command that reads a corpus shares
    (encode.py, train.py; inherit from this class)."""

    keep_line_endings: bool = opt(False, "keep \\r\\n and \\r in text exactly (default: they become "
                                         "\\n, as the classic tool's text-mode read made them)")
    column: str | None = opt(None, "column of .csv/.jsonl files holding the text: a CSV header name "
                                   "or 0-based index (default: the only column; JSONL: text)")
    header: str = opt("auto", "whether the first row of .csv files is a header (auto: when --column "
                              "is a name, or every cell of it is one word like text)",
                      choices=HEADER_MODES)

    def reading_kwargs(self) -> dict:
        """These flags as keyword arguments of encode_stream, load_dataset and encode_to_npz."""
        return {"keep_line_endings": self.keep_line_endings, "column": self.column,
                "header": self.header}

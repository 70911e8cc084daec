"""What every dataset loader returns, and careful readers for raw text files and tables.

A loader (:mod:`~corarec.data.movielens`, :mod:`~corarec.data.amazon`, :mod:`~corarec.data.custom`)
reads the user's files, applies its protocol (filters, label, split) and returns a :class:`RawData`
that still uses the original ids; :func:`corarec.data.prepare.to_dataset` turns it into the prepared
format. The readers here raise :class:`~corarec.errors.CorarecError` naming the file and the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from corarec.errors import CorarecError

UNIX_SECONDS = (math.ceil(pd.Timestamp.min.timestamp()), math.floor(pd.Timestamp.max.timestamp()))
"""The Unix seconds a timestamp may hold: the span pandas can represent as a date (1677-09-22 to 2262-04-11)."""
UNIX_SECONDS_SPAN = "Unix seconds between 1677-09-22 and 2262-04-11"


@dataclass
class RawData:
    """Interactions with original ids, already labelled and split."""

    name: str
    """Dataset name written to ``dataset.json``."""
    item_noun: str
    """Noun used in prompts (``movie``, ``book``, ...)."""
    rows: pd.DataFrame
    """``user_raw`` (str), ``item_raw`` (str), ``label`` (0/1), ``timestamp`` (int seconds),
    ``split`` (``train``/``valid``/``test``), in file order; rows outside every split are already dropped."""
    titles: dict[str, str]
    """Original item id → title, for every item in ``rows`` (more are allowed and ignored)."""
    protocol: dict[str, Any] = field(default_factory=dict)
    """The options that produced the rows (recorded in ``dataset.json``)."""
    split_rules: dict[str, str] = field(default_factory=dict)
    """Human-readable rule of each split, used in the error for an empty split."""
    source: str = ""
    """The file(s) the rows came from, for error messages."""


def fixed_protocol_data(name: str, item_noun: str, rows: pd.DataFrame, split: np.ndarray, titles: dict[str, str],
                        protocol: Any, rules: dict[str, str], source: str, **recorded: Any) -> RawData:
    """The :class:`RawData` of a dataset with a fixed protocol (MovieLens, Amazon-Book).

    ``rows`` get their ``split`` (None: the row is in no split and dropped); the protocol recorded in
    ``dataset.json`` is the dataset's name, the time zone of its dates (UTC), the fields of the dataclass
    ``protocol`` and ``recorded``; ``rules`` describe each split for the error an empty split raises."""
    rows = rows.assign(split=split)
    rows = rows[rows["split"].notna()].reset_index(drop=True)
    return RawData(
        name=name, item_noun=item_noun, rows=rows, titles=titles,
        protocol={"dataset": name, "timezone": "UTC", **asdict(protocol), **recorded},
        split_rules=rules, source=source,
    )


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz``; a missing file is a :class:`CorarecError`."""
    if not path.is_file():
        raise CorarecError(f"{path}: file not found")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def numbered_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped), skipping blank lines."""
    try:
        with open_text(path, encoding) as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as e:
        raise CorarecError(f"{path}: not valid {encoding} text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise CorarecError(f"{path}: file not found") from None
        raise CorarecError(f"{path}: cannot read ({e})") from None


def read_delimited(
    path: Path, sep: str, n_fields: int, encoding: str = "utf-8", header: bool = False
) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """Split every line of ``path`` on ``sep`` into exactly ``n_fields`` strings.

    Returns ``(header_fields or None, rows, line_numbers)``. A line with another number of fields
    raises an error naming the file and the line.
    """
    head: list[str] | None = None
    rows: list[list[str]] = []
    numbers: list[int] = []
    for number, line in numbered_lines(path, encoding):
        fields = line.split(sep)
        if head is None and header:
            head = fields
            if len(head) != n_fields:
                raise CorarecError(f"{path}:{number}: header has {len(head)} fields, expected {n_fields}")
            continue
        if len(fields) != n_fields:
            raise CorarecError(
                f"{path}:{number}: malformed line: expected {n_fields} fields separated by {sep!r}, got {len(fields)}"
            )
        rows.append(fields)
        numbers.append(number)
    if header and head is None:
        raise CorarecError(f"{path}: file is empty (expected a header line)")
    return head, rows, numbers


def parse_numbers(values: Sequence[str], path: Path, lines: Sequence[int], what: str, integer: bool,
                  limits: tuple[float, float] | None = None, span: str | None = None) -> np.ndarray:
    """Convert strings to int64 (``integer``) or float64; the first bad value is reported with its line.

    ``limits`` (inclusive; described as ``span`` in the error) bound the values; integers are always
    bound to what int64 holds exactly, so nothing wraps around."""
    array = pd.to_numeric(pd.Series(values, dtype=object).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(array)
    if integer:
        bad |= array != np.round(array)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "an integer" if integer else "a number"
        raise CorarecError(f"{path}:{lines[i]}: {what} must be {kind}, got {values[i]!r}")
    low, high = limits if limits is not None else (-math.inf, math.inf)
    if integer:
        low, high = max(low, -(2.0**53)), min(high, 2.0**53)
    outside = (array < low) | (array > high)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise CorarecError(f"{path}:{lines[i]}: {what} {values[i]!r} is out of range ({span or f'{low:g} to {high:g}'})")
    return array.astype(np.int64) if integer else array


def csv_records(path: Path, sep: str) -> Iterator[tuple[int, int]]:
    """``(first line, number of fields)`` of every non-blank record of a CSV/TSV file, header first, read
    as pandas reads it: blank and whitespace-only lines are skipped, a quoted field may span lines. Lines
    are 1-based, as an editor numbers them. Files compressed other than by gzip yield nothing (pandas reads them)."""
    if path.suffix.lower() in (".bz2", ".zip", ".xz", ".zst", ".tar"):
        return
    with open_text(path) as handle:
        reader = csv.reader(handle, delimiter=sep, skipinitialspace=True)
        line = 1
        for record in reader:
            if len(record) > 1 or (record and record[0].strip()):
                yield line, len(record)
            line = reader.line_num + 1


def check_csv_fields(path: Path, sep: str) -> None:
    """Every record of a CSV/TSV has as many fields as its header, else an error naming the first line that has not
    (what the csv module cannot read at all is left to pandas to report)."""
    try:
        records = csv_records(path, sep)
        header = next(records, None)
        for line, n_fields in records if header is not None else ():
            if n_fields != header[1]:
                raise CorarecError(f"{path}:{line}: malformed line: expected {header[1]} fields separated by "
                                   f"{sep!r} (as in the header), got {n_fields}")
    except (csv.Error, UnicodeDecodeError, OSError, EOFError):
        return


def csv_line_of_row(path: Path, sep: str, row: int) -> int:
    """The line where data row ``row`` (0-based, as pandas numbers it) of a CSV/TSV starts, the header being line 1."""
    try:
        for index, (line, _) in enumerate(csv_records(path, sep)):
            if index == row + 1:  # record 0 is the header
                return line
    except (csv.Error, UnicodeDecodeError, OSError, EOFError):
        pass
    return row + 2  # one line per record: right unless the file could not be scanned


TEXT_TABLES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
"""Suffix of a CSV/TSV table → its field separator."""
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip")
"""Compression suffixes a CSV/TSV table may add (``log.csv.gz``); pandas decompresses them."""
PARQUET = (".parquet", ".pq")
TABLE_FORMATS = ".csv or .tsv (optionally compressed: .gz, .bz2, .xz, .zip) or .parquet"
"""The table files :func:`read_table` reads, as written in its error."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table with a header: CSV or TSV (every column as text, so ids keep leading zeros; an empty
    field is missing) or parquet. Errors name the file, and for a ragged CSV/TSV the line an editor shows."""
    path = Path(path)
    if not is_table_file(path):
        raise CorarecError(f"{path}: expected a {TABLE_FORMATS} file")
    if not path.is_file():
        raise CorarecError(f"{path}: file not found")
    if is_parquet(path):
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a bad parquet file
            raise CorarecError(f"{path}: not a readable parquet file ({' '.join(str(e).split())})") from None
    sep = table_separator(path)
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise CorarecError(f"{path}: file is empty") from None
    except pd.errors.ParserError as e:
        check_csv_fields(path, sep)  # names the first ragged line as an editor counts it
        raise CorarecError(f"{path}: malformed file ({' '.join(str(e).split())})") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CorarecError(f"{path}: cannot read ({' '.join(str(e).split())})") from None
    check_csv_fields(path, sep)  # pandas pads short lines, reads a long first line's extra field as an index
    return table


def is_table_file(path: Path) -> bool:
    """Whether :func:`read_table` reads ``path`` by its suffix (CSV, TSV, maybe compressed, or parquet)."""
    return is_parquet(path) or table_separator(path) is not None


def table_separator(path: Path) -> str | None:
    """The field separator of a CSV/TSV table by its suffix (``.csv``, ``.tsv.gz``, ...); None for other files."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return TEXT_TABLES.get(suffixes[-1]) if suffixes else None


def is_parquet(path: Path) -> bool:
    """Whether ``path`` names a parquet file (``.parquet``, ``.pq``)."""
    return path.suffix.lower() in PARQUET


def natural_order(raw_ids: Sequence[str]) -> list[str]:
    """Distinct ids sorted numerically when all are integers, else as strings (a stable id order)."""
    unique = pd.unique(pd.Series(list(raw_ids), dtype=object))
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if numeric.notna().all() and (numeric == numeric.round()).all():
        order = np.argsort(numeric.to_numpy(dtype=np.float64), kind="stable")
        return [str(unique[i]) for i in order]
    return sorted(str(u) for u in unique)

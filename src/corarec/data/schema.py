"""The prepared-dataset format: read, validate, write.

A prepared dataset is a directory::

    items.parquet    item_id (int, 0..n_items-1), title (str), item_raw (str, optional)
    users.parquet    user_id (int, 0..n_users-1), user_raw (str)            [optional]
    train.parquet    user_id, item_id, label (0/1), timestamp (int seconds),
    valid.parquet    history (list of item ids, oldest first)               [history optional]
    test.parquet
    dataset.json     name, item_noun, n_users, n_items, counts per split

When ``history`` is absent it is derived by the CoLLM protocol (:mod:`corarec.data.history`).
Users hand-make these directories, so reading validates everything and names the file at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corarec.data.history import add_history
from corarec.errors import CorarecError
from corarec.utils.io import atomic_dir, read_json, recover_dir, write_json

SPLITS = ("train", "valid", "test")
ROW_COLUMNS = ("user_id", "item_id", "label", "timestamp")


@dataclass
class Dataset:
    """A prepared CTR dataset held in memory."""

    name: str
    """Short dataset name (``ml-100k``, ``ml-1m``, ``amazon-book`` or the user's)."""
    item_noun: str
    """Noun used in prompts: ``movie`` or ``book``."""
    items: pd.DataFrame
    """``item_id``, ``title`` and optionally ``item_raw``; one row per item, ids 0..n_items-1."""
    splits: dict[str, pd.DataFrame]
    """``train``/``valid``/``test`` rows: user_id, item_id, label, timestamp, history."""
    users: pd.DataFrame | None = None
    """``user_id``, ``user_raw`` (original ids), if known."""
    info: dict[str, Any] = field(default_factory=dict)
    """Everything else from ``dataset.json`` (statistics, protocol options)."""
    root: Path | None = None
    """Directory the dataset was read from, if any."""

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        if self.users is not None:
            return len(self.users)
        return int(self.info.get("n_users") or 1 + max(int(s["user_id"].max()) for s in self.splits.values() if len(s)))

    @property
    def train(self) -> pd.DataFrame:
        return self.splits["train"]

    @property
    def valid(self) -> pd.DataFrame:
        return self.splits["valid"]

    @property
    def test(self) -> pd.DataFrame:
        return self.splits["test"]

    def titles(self) -> list[str]:
        """Item titles indexed by item id."""
        return self.items["title"].tolist()

    def user_index(self) -> dict[str, int]:
        """Map original user id (as string) → internal id."""
        if self.users is None:
            return {str(u): int(u) for u in range(self.n_users)}
        return dict(zip(self.users["user_raw"].astype(str), self.users["user_id"].astype(int)))

    def item_index(self) -> dict[str, int]:
        """Map original item id (as string) → internal id."""
        raw = self.items["item_raw"] if "item_raw" in self.items else self.items["item_id"]
        return dict(zip(raw.astype(str), self.items["item_id"].astype(int)))


def read_dataset(path: str | Path) -> Dataset:
    """Read and validate a prepared dataset directory."""
    root = Path(path)
    recover_dir(root)  # a `prepare --overwrite` killed mid-swap leaves the previous dataset in .NAME.old
    if not root.is_dir():
        raise CorarecError(f"{root}: prepared dataset directory not found (run `corarec prepare` first)")
    meta_path = root / "dataset.json"
    info = read_json(meta_path)
    if not isinstance(info, dict):
        raise CorarecError(f"{meta_path}: expected a JSON object")
    for key in ("name", "item_noun"):
        if key not in info:
            raise CorarecError(f"{meta_path}: missing key '{key}'")
        if not isinstance(info[key], str) or not info[key].strip():
            raise CorarecError(f"{meta_path}: '{key}' must be non-empty text, got {info[key]!r}")
    for key in ("n_users", "n_items"):
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CorarecError(f"{meta_path}: '{key}' must be a positive integer, got {value!r}")

    items = _read_parquet(root / "items.parquet")
    _require_columns(items, ("item_id", "title"), root / "items.parquet")
    _require_int(items, "item_id", root / "items.parquet")
    n_items = len(items)
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(n_items)):
        raise CorarecError(f"{root / 'items.parquet'}: item_id must be exactly 0..{n_items - 1}, each once")
    if items["title"].isna().any():
        bad = int(items.loc[items["title"].isna(), "item_id"].iloc[0])
        raise CorarecError(f"{root / 'items.parquet'}: item {bad} has no title")
    items["title"] = items["title"].astype(str)

    users = None
    if (root / "users.parquet").exists():
        users = _read_parquet(root / "users.parquet")
        _require_columns(users, ("user_id", "user_raw"), root / "users.parquet")
        _require_int(users, "user_id", root / "users.parquet")
        users = users.sort_values("user_id", kind="stable").reset_index(drop=True)
        if not np.array_equal(users["user_id"].to_numpy(), np.arange(len(users))):
            raise CorarecError(f"{root / 'users.parquet'}: user_id must be exactly 0..{len(users) - 1}, each once")
    n_users = len(users) if users is not None else info.get("n_users")

    splits: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        file = root / f"{name}.parquet"
        frame = _read_parquet(file)
        _require_columns(frame, ROW_COLUMNS, file)
        for column in ROW_COLUMNS:
            _require_int(frame, column, file)
        if len(frame) == 0:
            raise CorarecError(f"{file}: the {name} split is empty")
        bad = ~frame["label"].isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CorarecError(f"{file}: row {row}: label must be 0 or 1, got {frame['label'].iloc[row]}")
        _check_range(frame, "item_id", n_items, file)
        if n_users is not None:
            _check_range(frame, "user_id", int(n_users), file)
        elif (frame["user_id"] < 0).any():
            row = int(np.flatnonzero((frame["user_id"] < 0).to_numpy())[0])
            raise CorarecError(f"{file}: row {row}: user_id {frame['user_id'].iloc[row]} is negative")
        frame = frame.astype({"user_id": "int64", "item_id": "int64", "label": "int8", "timestamp": "int64"})
        splits[name] = frame.reset_index(drop=True)

    has_history = ["history" in s for s in splits.values()]
    if all(has_history):
        for name, frame in splits.items():
            _check_history(frame, n_items, root / f"{name}.parquet")
            frame["history"] = [np.asarray(h, dtype=np.int64).tolist() for h in frame["history"]]
    else:
        if any(has_history):
            missing = [n for n, h in zip(SPLITS, has_history) if not h]
            raise CorarecError(f"{root}: 'history' is present in some splits but missing in {', '.join(missing)}")
        splits = add_history(splits)

    return Dataset(
        name=str(info["name"]),
        item_noun=str(info["item_noun"]),
        items=items,
        splits=splits,
        users=users,
        info=info,
        root=root,
    )


def write_dataset(ds: Dataset, out: str | Path, overwrite: bool = True) -> Path:
    """Write ``ds`` to ``out`` atomically (a temporary directory renamed into place)."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        ds.items.to_parquet(tmp / "items.parquet", index=False)
        if ds.users is not None:
            ds.users.to_parquet(tmp / "users.parquet", index=False)
        for name in SPLITS:
            ds.splits[name].to_parquet(tmp / f"{name}.parquet", index=False)
        info = dict(ds.info)
        info.update(name=ds.name, item_noun=ds.item_noun, n_users=ds.n_users, n_items=ds.n_items)
        write_json(tmp / "dataset.json", info)
    ds.root = out
    return out


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CorarecError(f"{path}: file not found")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types
        raise CorarecError(f"{path}: not a readable parquet file ({e})") from None


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CorarecError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}")


def _require_int(frame: pd.DataFrame, column: str, path: Path) -> None:
    if not pd.api.types.is_integer_dtype(frame[column]):
        raise CorarecError(f"{path}: column '{column}' must hold integers, found dtype {frame[column].dtype}")


def _check_range(frame: pd.DataFrame, column: str, n: int, path: Path) -> None:
    bad = (frame[column] < 0) | (frame[column] >= n)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CorarecError(f"{path}: row {row}: {column} {frame[column].iloc[row]} out of range 0..{n - 1}")


def _check_history(frame: pd.DataFrame, n_items: int, path: Path) -> None:
    for row, hist in enumerate(frame["history"]):
        if hist is None:
            raise CorarecError(f"{path}: row {row}: history is null (use an empty list)")
        values = np.asarray(hist)
        if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= n_items):
            raise CorarecError(f"{path}: row {row}: history holds an unknown item id (items are 0..{n_items - 1})")

"""``prepare``: raw interaction files → the prepared CTR format (see :mod:`corarec.data.schema`).

Every loader returns a :class:`~corarec.data.raw.RawData` (original ids, labels, splits); this
module remaps ids, orders rows, derives histories, computes statistics and writes the directory
atomically. The same steps apply to every dataset:

- users and items are those that occur in the kept rows; ids are remapped to ``0..n-1`` in the
  natural order of the original ids (numeric when all are integers), which are kept as strings
  in ``users.parquet`` (``user_raw``) and ``items.parquet`` (``item_raw``);
- each split's rows are ordered by (user, timestamp); rows with equal timestamps keep file order;
- ``history`` is the CoLLM one (:func:`corarec.data.history.add_history`): the same user's earlier
  positive items over all splits, oldest first;
- ``dataset.json`` records the protocol options, the source and the statistics of
  :func:`corarec.data.stats.dataset_stats`.

``out`` is replaced only when it is absent, empty, or a prepared dataset (its ``dataset.json`` and split
files, nothing else) and ``overwrite`` is set; an ``out`` that holds one of the input files is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corarec import __version__
from corarec.data.history import add_history
from corarec.data.raw import RawData, natural_order
from corarec.data.schema import SPLITS, Dataset, write_dataset
from corarec.data.stats import dataset_stats
from corarec.errors import CorarecError
from corarec.utils.outdir import check_replaceable, inside

DATASETS = ("ml-100k", "ml-1m", "amazon-book", "custom")
ARTEFACTS = ("dataset.json", "items.parquet", "users.parquet", *(f"{name}.parquet" for name in SPLITS))
"""Every file ``prepare`` writes: a directory holding anything else is never replaced."""


def prepare(
    name: str,
    out: str | Path,
    raw: str | Path | None = None,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    label_threshold: float | None = None,
    split: str = "0.8,0.1,0.1",
    item_noun: str = "item",
    overwrite: bool = False,
) -> Dataset:
    """Prepare dataset ``name`` (one of :data:`DATASETS`) into ``out`` and return it, statistics in ``info["stats"]``.

    ``raw`` is the folder of the raw files (ml-100k: optional, default the bundled copy). ``custom``
    reads ``interactions`` and ``items`` and uses ``label_threshold``, ``split`` and ``item_noun``
    (see :func:`corarec.data.custom.load_custom`); the other datasets follow their fixed protocol.
    An existing prepared dataset in ``out`` is replaced only with ``overwrite``; any other non-empty
    directory, or one that holds an input, never (checked before anything is read).
    """
    out = Path(out)
    for option, value in (("--raw", raw), ("--interactions", interactions), ("--items", items)):
        if value is not None and inside(value, out):
            raise CorarecError(f"{out}: holds the input {value} ({option}); writing the prepared dataset there "
                               "would delete it; choose another --out")
    check_replaceable(out, "prepared dataset", is_prepared_dataset, ARTEFACTS, overwrite)
    data = load_raw(name, raw, dict(interactions=interactions, items=items, label_threshold=label_threshold,
                                    split=split, item_noun=item_noun))
    ds = to_dataset(data)
    write_dataset(ds, out, overwrite=True)  # replacing was checked above
    return ds


def is_prepared_dataset(path: str | Path) -> bool:
    """Whether ``path`` looks like a prepared dataset: ``dataset.json`` and the three split files."""
    root = Path(path)
    return (root / "dataset.json").is_file() and all((root / f"{name}.parquet").is_file() for name in SPLITS)


def load_raw(name: str, raw: str | Path | None = None, custom: dict[str, Any] | None = None) -> RawData:
    """Run the loader of dataset ``name`` (no files are written).

    ``custom``: keyword arguments of :func:`corarec.data.custom.load_custom` (``interactions``, ``items``,
    ``label_threshold``, ``split``, ``item_noun``); for another dataset the first three must be None."""
    raw_path = Path(raw) if raw is not None else None
    custom = dict(custom or {})
    if name == "custom":
        from corarec.data.custom import load_custom

        interactions = custom.pop("interactions", None)
        if interactions is None and raw_path is not None and raw_path.is_file():
            interactions = raw_path  # `prepare custom --raw log.csv`
        return load_custom(interactions, custom.pop("items", None), **custom)
    if name not in DATASETS:
        raise CorarecError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    for option in ("interactions", "items", "label_threshold"):
        if custom.get(option) is not None:
            raise CorarecError(f"--{option.replace('_', '-')} only applies to 'custom'; {name} follows its fixed protocol")
    if name == "ml-100k":
        from corarec.data.movielens import load_ml100k

        return load_ml100k(raw_path)
    if name == "ml-1m":
        from corarec.data.movielens import load_ml1m

        return load_ml1m(raw_path)
    from corarec.data.amazon import load_amazon_book

    return load_amazon_book(raw_path)


def to_dataset(data: RawData) -> Dataset:
    """Remap ids, order rows, add histories and statistics: the in-memory prepared dataset."""
    rows = data.rows
    for name in SPLITS:
        if not (rows["split"] == name).any():
            rule = data.split_rules.get(name, "")
            raise CorarecError(
                f"{data.source or data.name}: the {name} split is empty" + (f" (no rows in {rule})" if rule else "")
            )

    user_raw = natural_order(rows["user_raw"])
    item_raw = natural_order(rows["item_raw"])
    missing = [i for i in item_raw if not str(data.titles.get(i, "")).strip()]
    if missing:
        raise CorarecError(
            f"{data.source or data.name}: {len(missing)} item(s) have no title, e.g. item {missing[0]!r}"
        )
    user_id = pd.Series(np.arange(len(user_raw), dtype=np.int64), index=user_raw)
    item_id = pd.Series(np.arange(len(item_raw), dtype=np.int64), index=item_raw)

    table = pd.DataFrame({
        "user_id": user_id.loc[rows["user_raw"].astype(str)].to_numpy(),
        "item_id": item_id.loc[rows["item_raw"].astype(str)].to_numpy(),
        "label": rows["label"].to_numpy(dtype=np.int8),
        "timestamp": rows["timestamp"].to_numpy(dtype=np.int64),
        "split": rows["split"].to_numpy(),
    })
    splits = {}
    for name in SPLITS:
        part = table[table["split"] == name].drop(columns="split")
        splits[name] = part.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    splits = add_history(splits)

    items = pd.DataFrame({
        "item_id": np.arange(len(item_raw), dtype=np.int64),
        "title": [str(data.titles[i]).strip() for i in item_raw],
        "item_raw": item_raw,
    })
    users = pd.DataFrame({"user_id": np.arange(len(user_raw), dtype=np.int64), "user_raw": user_raw})
    info = {"protocol": data.protocol, "source": data.source, "corarec_version": __version__}
    ds = Dataset(name=data.name, item_noun=data.item_noun, items=items, splits=splits, users=users, info=info)
    ds.info["stats"] = dataset_stats(ds)
    return ds

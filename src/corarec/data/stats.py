"""Dataset statistics (rows, users, items, positive rate, warm share per split) and their table.

``warm share`` is the fraction of a split's rows whose user *and* item both occur in train (the
warm/cold definition of :func:`corarec.evaluation.metrics.warm_mask`); it is 1 for train by construction.
"""

from __future__ import annotations

from typing import Any

from corarec.data.schema import SPLITS, Dataset
from corarec.evaluation.metrics import warm_mask


def dataset_stats(ds: Dataset) -> dict[str, Any]:
    """``{"name", "n_users", "n_items", "splits": {split: {rows, users, items, positive_rate, warm_share}}}``."""
    train = ds.splits["train"]
    splits: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        frame = ds.splits[name]
        rows = len(frame)
        splits[name] = {
            "rows": rows,
            "users": int(frame["user_id"].nunique()),
            "items": int(frame["item_id"].nunique()),
            "positive_rate": round(float(frame["label"].mean()), 4) if rows else None,
            "warm_share": round(float(warm_mask(frame, train).mean()), 4) if rows else None,
        }
    return {"name": ds.name, "n_users": int(ds.n_users), "n_items": int(ds.n_items), "splits": splits}


def format_stats(stats: dict[str, Any]) -> str:
    """An aligned text table of :func:`dataset_stats`' result, one line per split plus a total line."""
    header = ("split", "rows", "users", "items", "pos. rate", "warm share")
    lines = []
    for name, part in stats["splits"].items():
        lines.append((
            name,
            f"{part['rows']:,}",
            f"{part['users']:,}",
            f"{part['items']:,}",
            _fmt_rate(part["positive_rate"]),
            _fmt_rate(part["warm_share"]),
        ))
    total_rows = sum(p["rows"] for p in stats["splits"].values())
    lines.append(("all", f"{total_rows:,}", f"{stats['n_users']:,}", f"{stats['n_items']:,}", "", ""))
    widths = [max(len(str(r[c])) for r in [header, *lines]) for c in range(len(header))]

    def render(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [str(v).rjust(w) for v, w in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    title = f"{stats['name']}: {stats['n_users']:,} users, {stats['n_items']:,} items"
    rule = "-" * len(render(header))
    return "\n".join([title, render(header), rule, *map(render, lines[:-1]), rule, render(lines[-1])])


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

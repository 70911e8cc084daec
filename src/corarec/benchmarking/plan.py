"""What a benchmark runs: ``--methods`` names → :class:`Entry` objects (prerequisites first), ``--seeds``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from corarec.cf.config import CF_MODELS
from corarec.cf.references import REFERENCES
from corarec.training.config import SEED_MAX
from corarec.errors import CorarecError

DEFAULT_METHODS = ("item-rate", "logistic-rate", "mf", "lightgcn", "sasrec", "icl", "tallrec",
                   "collm-mf", "cora-mf", "cora-lightgcn", "cora-sasrec")
"""What ``corarec benchmark`` runs without ``--methods``: the paper's table plus two references."""

CF_LABELS = {"mf": "MF", "lightgcn": "LightGCN", "sasrec": "SASRec"}
REFERENCE_LABELS = {"item-rate": "Item rate", "logistic-rate": "Logistic on rates"}
"""Table label of each reference of :data:`corarec.cf.references.REFERENCES`."""


@dataclass(frozen=True)
class Entry:
    """One method of the benchmark."""

    name: str
    """As given to ``--methods`` (``cora-mf``)."""
    label: str
    """As shown in the table (``CoRA-MF``)."""
    kind: str
    """``reference``, ``cf`` or ``llm``."""
    method: str | None = None
    """LLM method name for ``corarec train`` (``cora``, ``collm``, ``tallrec``, ``icl``)."""
    cf: str | None = None
    """CF model the method reads (for a ``cf`` entry: the model itself)."""
    init: str | None = None
    """Entry whose run initialises this one (CoLLM ← TALLRec)."""
    anchor: str = "none"
    """The method's ``anchor`` setting: ``cf`` for the CF-anchored entries (``<method>-anchored-<cf>``)."""
    train_split: str = "train"
    """The method's ``train_split`` setting: ``valid-half`` for the stacked entries (``<method>-stacked-<cf>``)."""

    @property
    def per_seed(self) -> bool:
        """Whether the method is trained once per training seed (not the references nor zero-shot ICL,
        whose scores no seed changes: they run once)."""
        return self.kind != "reference" and self.method != "icl"


def parse_entry(name: str) -> Entry:
    """The :class:`Entry` of a ``--methods`` name; unknown names are a clear error."""
    key = name.strip().lower()
    if key in REFERENCES:
        return Entry(key, REFERENCE_LABELS[key], "reference")
    if key in CF_MODELS:
        return Entry(key, CF_LABELS[key], "cf", cf=key)
    if key == "icl":
        return Entry(key, "ICL", "llm", method="icl")
    if key == "tallrec":
        return Entry(key, "TALLRec", "llm", method="tallrec")
    match = re.fullmatch(r"(cora|collm)-(\w+)", key)
    if match and match[2] in CF_MODELS:
        method, cf = match[1], match[2]
        label = ("CoRA-" if method == "cora" else "CoLLM-") + CF_LABELS[cf]
        return Entry(key, label, "llm", method=method, cf=cf, init="tallrec" if method == "collm" else None)
    match = re.fullmatch(r"(cora|tallrec)-(anchored|stacked)-(\w+)", key)
    if match and match[3] in CF_MODELS:  # beyond the paper: the CF-anchored score (anchor = "cf")
        method, stacked, cf = match[1], match[2] == "stacked", match[3]
        # stacked: trained on half of the validation users, the rows the CF model never saw (train_split)
        how = "stacked on held-out users" if stacked else "anchored"
        label = (f"CoRA-{CF_LABELS[cf]} ({how}, beyond the paper)" if method == "cora"
                 else f"TALLRec + {CF_LABELS[cf]} anchor{', stacked' if stacked else ''} (fusion baseline)")
        return Entry(key, label, "llm", method=method, cf=cf, anchor="cf",
                     train_split="valid-half" if stacked else "train")
    known = ", ".join([*REFERENCES, *CF_MODELS, "icl", "tallrec", "collm-<cf>", "cora-<cf>", "cora-anchored-<cf>",
                       "tallrec-anchored-<cf>", "cora-stacked-<cf>", "tallrec-stacked-<cf>"])
    raise CorarecError(f"--methods: unknown method '{name}' (known: {known}; <cf> is one of {', '.join(CF_MODELS)})")


def plan(methods: list[str]) -> tuple[list[Entry], list[Entry]]:
    """(requested entries, every entry to run in order: prerequisites first)."""
    requested: list[Entry] = []
    for name in methods:
        entry = parse_entry(name)
        if entry not in requested:
            requested.append(entry)
    if not requested:
        raise CorarecError("--methods: name at least one method")
    needed = list(requested)
    for entry in requested:
        for dependency in (entry.cf if entry.kind == "llm" else None, entry.init):
            if dependency and parse_entry(dependency) not in needed:
                needed.append(parse_entry(dependency))
    rank = {"reference": 0, "cf": 1, "llm": 2}
    ordered = sorted(needed, key=lambda e: (rank[e.kind], e.init is not None))  # stable: request order
    return requested, ordered



def parse_seeds(seeds: int | str | list[int] | tuple[int, ...]) -> list[int]:
    """The training seeds of ``--seeds`` (``"0,1,2"``; an int or a list also do), in order, each once."""
    parts = seeds.split(",") if isinstance(seeds, str) else [seeds] if isinstance(seeds, int) else list(seeds)
    parsed: list[int] = []
    for part in parts:
        text = str(part).strip()
        if isinstance(part, bool) or not text.isdigit():  # whole numbers >= 0 only (numpy's seeds)
            raise CorarecError(f"--seeds: expected comma-separated whole numbers >= 0 (0,1,2), got {seeds!r}")
        if int(text) not in parsed:
            parsed.append(check_seed(int(text), "--seeds"))
    if not parsed:
        raise CorarecError("--seeds: name at least one seed")
    return parsed


def check_seed(seed: int, option: str) -> int:
    """``seed`` if it is a whole number NumPy accepts as a seed (0 .. 2**32 - 1), else one clear error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise CorarecError(f"{option}: a seed is a whole number from 0 to {SEED_MAX}, got {seed!r}")
    return seed

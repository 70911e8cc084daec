"""The CF settings every seed of a CF model trains with: tuned on validation, or fixed by the preset.

The CF presets were chosen on MovieLens-100K and need not transfer to another dataset, so by default
the benchmark tunes each CF model once per dataset: :func:`corarec.cf.train_cf` with a grid over
lr × weight decay × dim (:func:`corarec.cf.config.grid_space`: ``configs/cf/defaults.yaml``'s ``tune``
lists, or the preset's ``cf: {tune: {...}}``),
the candidate with the best AUC on the whole valid split kept (the same validation that stops CF
training early). Tuning trains with the sample seed, so it does not change with ``--seeds``; it
lives in ``runs/<cf>/tuning/`` (``grid/``: the best candidate's run with the whole grid's log in its
``metrics.json``; ``tuning.json``: the spec and the chosen values) and is reused like a run.

With ``tune_cf=False`` (``--no-tune-cf``, ``make demo``) the preset's ``cf`` section is used as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from corarec.benchmarking.reuse import difference, set_aside_stale
from corarec.cf.config import grid_space, make_config, section_settings
from corarec.utils.io import read_json, write_json

TUNED = ("lr", "weight_decay", "dim")
"""The settings that tuning chooses and the table prints."""
TUNING = "tuning.json"


def cf_settings(sections: dict, model: str) -> dict[str, Any]:
    """The preset's ``cf`` section for ``model``: shared keys, then the model's own sub-section
    (``tune`` left out: that is the tuning grid, :func:`tuning_grid`); every name a :class:`CFConfig`
    setting and every value valid for it (checked now, before anything trains)."""
    settings = section_settings(sections.get("cf"), model, "preset cf section")
    make_config(model, where=f"preset cf section ({model})", **settings)
    return settings


def tuning_grid(sections: dict, model: str) -> dict[str, list]:
    """The grid ``model`` is tuned over: the bundled one (:func:`corarec.cf.config.grid_space`), each key
    replaced by the preset's ``cf: {tune: {...}}`` and then ``cf: {<model>: {tune: {...}}}``."""
    return grid_space(model, sections, "preset")


def chosen_settings(data: Path, model: str, sections: dict, tune: bool, sample_seed: int, method_dir: Path,
                    retrain_stale: bool) -> dict[str, Any]:
    """``{"settings": train_cf arguments for every seed, "chosen": {lr, weight_decay, dim}, "tuned": bool, ...}``."""
    settings = cf_settings(sections, model)
    if not tune:
        config = make_config(model, **settings)
        return {"settings": settings, "chosen": {k: getattr(config, k) for k in TUNED}, "tuned": False}
    grid = tuning_grid(sections, model)
    record = _tune(data, model, settings, grid, sample_seed, method_dir / "tuning", retrain_stale)
    return {"settings": {**settings, **record["chosen"]}, "tuned": True, **record}


def _tune(data: Path, model: str, settings: dict, grid: dict, seed: int, tuning: Path, retrain_stale: bool) -> dict:
    """Run (or reuse) the grid search of ``model`` in ``tuning``; the chosen values and the grid's log."""
    from corarec.cf import train_cf

    spec = {"model": model, "settings": settings, "grid": grid, "seed": seed, "data": str(Path(data).resolve())}
    if (tuning / TUNING).is_file():
        stored = read_json(tuning / TUNING)
        found, wanted = _searched_over(stored.get("spec") or {}), _searched_over(spec)
        if found == wanted:
            tqdm.write(f"    reusing the tuning of {model} in {tuning}")
            return stored["record"]
        set_aside_stale(tuning, difference(found, wanted), retrain_stale)  # names only what makes it stale
    n = 1
    for values in grid.values():
        n *= len(values)
    tqdm.write(f"    tuning {model} on validation: {n} candidates ({' × '.join(grid)})")
    metrics = train_cf(data, model, tuning / "grid", seed=seed, progress=True, overwrite=True, grid=grid, **settings)
    config = read_json(tuning / "grid" / "config.json")
    record = {"chosen": {k: config[k] for k in TUNED}, "grid": grid, "candidates": metrics["grid"],
              "tuning_valid_auc": max(c["valid_auc"] for c in metrics["grid"]),
              "tuning_seconds": metrics["train_seconds"], "tuning_run": str(tuning / "grid")}
    write_json(tuning / TUNING, {"spec": spec, "record": record})
    return record


def _searched_over(spec: dict) -> dict:
    """``spec`` without the settings its grid replaces: a grid search's result does not depend on the
    values they had before it (a preset that now holds the tuned values keeps its tuning)."""
    grid = spec.get("grid") or {}
    return {**spec, "settings": {k: v for k, v in (spec.get("settings") or {}).items() if k not in grid}}

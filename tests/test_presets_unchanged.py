"""The bundled presets resolve to exactly the settings they resolved to before the config refactor
(issue 17: CF presets moved from Python to YAML, CoRA's generator settings nested, CFConfig.layers
renamed num_layers). ``golden/presets.json`` holds what commit f1da301 resolved, in its config.json
layout (format 2); the run-format migration turns it into today's layout, which must then match
what is resolved now, value for value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corarec.benchmarking.tune import cf_settings, tuning_grid
from corarec.cf.config import CF_MODELS, CFConfig, make_config
from corarec.methods import REGISTRY, method_classes
from corarec.training.config import load_preset, resolve_config, run_config_from_dict, to_dict
from corarec.training.run_format import migrate, settings_of
from corarec.utils.settings import config_from_dict

BEFORE = json.loads((Path(__file__).parent / "golden" / "presets.json").read_text())["values"]
PRESETS = (None, "cpu", "paper")
REGISTRY_CONFIGS = {name: method_classes(name)[0] for name in REGISTRY}


def as_json(value):
    return json.loads(json.dumps(value))


CHANGED_SINCE = {("cpu", None, "eval_every"): 250, ("cpu", "cora", "lr"): 3e-4}
"""Deliberate preset changes made after the refactor: (preset, method or None for every method, train field) →
new value (issue 12: 4 validations of 4,000 rows instead of 8; issue 13: CoRA's peak lr, chosen on half of the
validation users and confirmed on the other half)."""


METHOD_CHANGED_SINCE = {("cpu", "icl"): {"layers": "top:8", "cache_prefix": True}}
"""Deliberate changes of a method's own settings since: (preset, method) → new values (issue 14: ICL reads its
frozen layers 0-21 from the prefix cache CoRA and TALLRec share)."""


CF_TUNED = {"mf": {"lr": 3e-3, "weight_decay": 1e-5, "dim": 64}, "sasrec": {"weight_decay": 1e-4}}
"""The cpu preset's cf values since issue 12: what `corarec benchmark` tuned on MovieLens-100K validation."""


def migrated(config: dict) -> dict:
    """A format-2 ``config.json`` body in today's layout."""
    return settings_of(migrate({"format": 2, "versions": {}, **config}))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("method", list(REGISTRY))
def test_a_preset_resolves_every_method_to_the_same_run_config_as_before(preset, method):
    now = resolve_config(method, "/d", "/o", "/c", None, preset)
    before = run_config_from_dict(migrated(BEFORE[f"run/{preset}/{method}"]))
    for (changed_preset, changed_method, field), value in CHANGED_SINCE.items():
        if changed_preset == preset and changed_method in (None, method):
            setattr(before.train, field, value)
    method_cls = REGISTRY_CONFIGS[method]
    # the method's settings compared as configs: a setting added since (the generator's query_init_std)
    # takes its default, the value the code of then hard-wired
    before_method = {**before.method_config, **METHOD_CHANGED_SINCE.get((preset, method), {})}
    assert config_from_dict(method_cls, now.method_config, "now") == config_from_dict(method_cls, before_method, "before")
    assert {**as_json(to_dict(now)), "method_config": None} == {**as_json(to_dict(before)), "method_config": None}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("model", CF_MODELS)
def test_a_preset_resolves_every_cf_model_to_the_same_cf_config_and_grid_as_before(preset, model):
    sections = load_preset(preset) if preset else {}
    settings = cf_settings(sections, model)
    tuned = CF_TUNED.get(model, {}) if preset == "cpu" else {}
    assert settings == {**BEFORE[f"cf-settings/{preset}/{model}"], **tuned}  # what a benchmark spec records
    old = {k: v for k, v in migrated({"type": "cf", **BEFORE[f"cf/{preset}/{model}"]}).items() if k != "type"}
    old.update(tuned)
    # compared as configs: a setting added since (log_dir) takes its default, as for the methods above
    assert make_config(model, **settings) == config_from_dict(CFConfig, old, "before")
    assert tuning_grid(sections, model) == BEFORE[f"cf-grid/{preset}/{model}"]


@pytest.mark.parametrize("model", CF_MODELS)
def test_train_cf_without_a_preset_keeps_its_per_model_defaults_and_a_preset_adds_its_cf_section(model, tmp_path):
    cpu = make_config(model, "cpu").to_dict()  # cpu's cf section = the defaults, but for the values tuned on ML-100K
    assert {**make_config(model).to_dict(), **CF_TUNED.get(model, {})} == cpu
    preset = tmp_path / "p.yaml"
    preset.write_text(f"cf: {{epochs: 5, {model}: {{dim: 16}}}}\n")
    config = make_config(model, str(preset), lr=0.5)
    assert (config.epochs, config.dim, config.lr) == (5, 16, 0.5)

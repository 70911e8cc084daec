"""The format of run directories: a version number and library versions in every ``config.json``.

Both run kinds (LLM runs of ``corarec train`` and CF runs of ``corarec train-cf``) write, beside
their settings::

    "format": 3,                                   the layout of the run directory
    "versions": {"corarec": "0.1.0", "torch": ..., "transformers": ..., "peft": ..., "python": ...}

``versions`` are those of the process that last wrote ``config.json`` (a ``--resume`` rewrites it).
Reading goes through :func:`check_and_migrate`: a newer format is refused with one line (upgrade
corarec), an older one is brought up to :data:`RUN_FORMAT` in memory by the chain in
:data:`MIGRATIONS` (the file itself is left as it is). ``config.json`` without ``format`` is format 1,
as written by corarec before formats were recorded.

Formats: 1 (no ``format`` key) → 2 (``format`` and ``versions`` recorded) → 3 (CoRA's generator
settings nested in ``method_config.generator``; a CF run's ``layers`` named ``num_layers``).
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from corarec.errors import CorarecError

RUN_FORMAT = 3
"""The format this corarec writes, and the newest it reads."""
FORMAT_KEY = "format"
VERSIONS_KEY = "versions"
STAMP_KEYS = (FORMAT_KEY, VERSIONS_KEY)
"""Keys of ``config.json`` that describe the file, not the run's settings."""
LIBRARIES = ("corarec", "torch", "transformers", "peft")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a run depends on (None: not installed), and Python's."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    if found["corarec"] is None:  # run from a source tree that is not installed
        from corarec import __version__

        found["corarec"] = __version__
    found["python"] = platform.python_version()
    return found


def stamp(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the current format and library versions first (any old stamp replaced)."""
    settings = {k: v for k, v in config.items() if k not in STAMP_KEYS}
    return {FORMAT_KEY: RUN_FORMAT, VERSIONS_KEY: library_versions(), **settings}


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without its format stamp: the run's settings only."""
    return {k: v for k, v in config.items() if k not in STAMP_KEYS}


def format_of(config: dict[str, Any], where: str | Path) -> int:
    """The format a ``config.json`` declares (1 when it declares none), checked to be a whole number >= 1."""
    value = config.get(FORMAT_KEY, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CorarecError(f"{where}: \"{FORMAT_KEY}\" must be a whole number >= 1, got {value!r}")
    return value


def check_and_migrate(config: Any, run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of ``run_dir`` brought up to :data:`RUN_FORMAT`; a newer format is refused."""
    where = Path(run_dir) / "config.json"
    if not isinstance(config, dict):
        raise CorarecError(f"{where}: expected a JSON object, got {type(config).__name__}")
    found = format_of(config, where)
    if found > RUN_FORMAT:
        raise CorarecError(f"run dir {run_dir} has format {found}, this corarec reads up to {RUN_FORMAT}; "
                           f"upgrade corarec")
    return migrate(config)


def migrate(config: dict[str, Any]) -> dict[str, Any]:
    """Apply the migrations from the format ``config`` declares up to :data:`RUN_FORMAT` (a new dict)."""
    config = dict(config)
    while (found := config.get(FORMAT_KEY, 1)) < RUN_FORMAT:
        config = MIGRATIONS[found](config)
        if config.get(FORMAT_KEY) != found + 1:
            raise AssertionError(f"migration from format {found} did not produce format {found + 1}")
    return config


def _from_format_1(config: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (before formats were recorded) → 2: the same settings; the versions are unknown."""
    return {FORMAT_KEY: 2, VERSIONS_KEY: {name: None for name in LIBRARIES}, **settings_of(config)}


GENERATOR_FIELDS_2 = ("queries", "depth", "heads", "width", "ffn_mult", "dropout", "input_norm", "interaction")
"""The generator settings a format-2 CoRA ``method_config`` held at its top level."""


def _from_format_2(config: dict[str, Any]) -> dict[str, Any]:
    """Format 2 → 3: CoRA's generator settings move into ``method_config.generator`` (with
    ``query_init_std``, then fixed at 0.02); a CF run's ``layers`` (LightGCN layers / SASRec blocks)
    is renamed ``num_layers``. Values are unchanged."""
    settings = settings_of(config)
    if settings.get("type") == "cf":
        settings = {("num_layers" if k == "layers" else k): v for k, v in settings.items()}
    elif settings.get("method") == "cora" and isinstance(settings.get("method_config"), dict):
        flat = settings["method_config"]
        nested = {k: v for k, v in flat.items() if k not in GENERATOR_FIELDS_2}
        generator = {k: flat[k] for k in GENERATOR_FIELDS_2 if k in flat}
        if generator:  # the queries' initial spread was no setting yet: format-2 runs had 0.02
            nested["generator"] = {**generator, "query_init_std": 0.02}
        settings = {**settings, "method_config": nested}
    return {FORMAT_KEY: 3, VERSIONS_KEY: config.get(VERSIONS_KEY), **settings}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_format_1, 2: _from_format_2}
"""``MIGRATIONS[n]`` turns a format-``n`` config into a format-``n + 1`` one."""

"""Typed settings: every field of a config dataclass is checked by its type and its declared range.

A config dataclass (:class:`~corarec.training.config.TrainConfig`, :class:`~corarec.training.config.RunConfig`,
:class:`~corarec.cf.config.CFConfig`, each method's config) derives from :class:`Settings` and
declares what a field accepts beyond its type next to the field::

    @dataclass
    class TrainConfig(Settings):
        batch_size: int = setting(8, at_least=1, doc="Training rows per optimizer step.")
        train_sample: str = setting("users", choices=("rows", "users"), doc="How ...")

The ``doc`` is the setting's one description: the command-line help of its option is generated from
it (:mod:`corarec.utils.options`). A field whose type is itself a config dataclass nests (CoRA's
``generator``): in a mapping it is a sub-mapping, as a keyword argument or option its fields are
flattened (``generator_depth``, ``--generator-depth``; :func:`corarec.utils.options.flat_fields`).

Construction validates every field against its annotation (``int``, ``float``, ``str``, ``bool``,
``X | None``, ``tuple[float, float]``, ``dict[...]``, a nested config) and its rule, and normalises
the value (a JSON list becomes the annotated tuple, an integer a float where a float is meant). So
whatever a config is built from — command-line options, a preset, ``config.json`` — passes through
the same checks. :func:`config_from_dict` is the one way from a mapping to a config (unknown and
missing keys are errors); :func:`check_option` checks a single option against a field's rule before
any work is done. Every problem is one :class:`~corarec.errors.CorarecError` line naming the
setting, the value and (when known) the file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, TypeVar

from corarec.errors import CorarecError

T = TypeVar("T")
RULE = "corarec.rule"
"""Key of a field's metadata that holds its :class:`Rule`."""
DOC = "corarec.doc"
"""Key of a field's metadata that holds its description."""
SEED_MAX = 2**32 - 1
"""Largest seed NumPy's global generator accepts (seeds are 0..SEED_MAX)."""


class SettingError(CorarecError):
    """A setting's value does not fit its type or rule; the message starts with the setting's name.

    Raised on construction, where the source is unknown; :func:`config_from_dict` and
    :func:`apply_settings` re-raise it as a :class:`CorarecError` that names the source too."""


@dataclass(frozen=True)
class Rule:
    """What a setting accepts beyond its type. Number bounds apply to every element of a tuple."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    """A regular expression the whole text must match."""
    expected: str | None = None
    """How to name what ``pattern`` accepts in an error (e.g. 'auto, cpu, cuda, cuda:N or mps')."""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the right type, not None) breaks the rule, or None."""
        if self.choices is not None and value not in self.choices:
            return f"must be {_either(self.choices)}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must be {self.expected or f'text matching {self.pattern!r}'}"
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(n, (int, float)) and not self._in_range(n) for n in numbers):
            return self._range_text()
        return None

    def _in_range(self, n: float) -> bool:
        return ((self.at_least is None or n >= self.at_least) and (self.above is None or n > self.above)
                and (self.at_most is None or n <= self.at_most) and (self.below is None or n < self.below))

    def _range_text(self) -> str:
        low = self.at_least if self.at_least is not None else self.above
        high = self.at_most if self.at_most is not None else self.below
        if low is not None and high is not None:
            left, right = "[" if self.at_least is not None else "(", "]" if self.at_most is not None else ")"
            return f"must lie in {left}{_num(low)}, {_num(high)}{right}"
        if low is not None:
            return f"must be at least {_num(low)}" if self.at_least is not None else f"must be greater than {_num(low)}"
        return f"must be at most {_num(high)}" if self.at_most is not None else f"must be less than {_num(high)}"


def setting(default: Any = MISSING, *, doc: str = "", default_factory: Any = MISSING, **rule: Any) -> Any:
    """A dataclass field with its description ``doc`` and a :class:`Rule` (keywords: at_least, above,
    at_most, below, choices, pattern, expected); with neither default the setting is required."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={RULE: Rule(**rule), DOC: " ".join(doc.split())})


def doc_of(f: dataclasses.Field) -> str:
    """The description a field was declared with (empty when none)."""
    return f.metadata.get(DOC, "")


def nested_class(cls: type, name: str) -> type | None:
    """The config class of field ``name`` when that field nests one (CoRA's ``generator``), else None."""
    hint = _hints(cls)[name]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


class Settings:
    """Base of the config dataclasses: construction validates and normalises every field.

    A subclass with cross-field checks overrides ``__post_init__`` and calls ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        validate(self)


def validate(obj: Any) -> None:
    """Check every field of dataclass ``obj`` against its annotation and rule (normalising it in place);
    the first problem is a :class:`SettingError`."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _checked(getattr(obj, f.name), hints[f.name], f.metadata.get(RULE), f.name)
        object.__setattr__(obj, f.name, value)


def check_option(cls: type, name: str, value: Any, option: str) -> Any:
    """Check one value (e.g. a command-line option) against field ``name`` of config class ``cls``;
    None (option not given) passes. Returns the normalised value; the error names ``option``."""
    if value is None:
        return None
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _checked(value, _hints(cls)[name], f.metadata.get(RULE), option, error=CorarecError)


def config_from_dict(cls: type[T], data: Any, where: str, prefix: str = "") -> T:
    """Build config class ``cls`` from a mapping (a ``config.json`` section, a preset section).

    ``where`` names the source (a file), ``prefix`` the section inside it (``train.``); unknown or
    missing keys, wrong types and out-of-range values are one-line errors naming both."""
    values = mapping(data, where, prefix.rstrip(".") or "settings")
    fields = dataclasses.fields(cls)
    for f in fields:  # a nested config given as a mapping: built (and checked) the same way
        inner = nested_class(cls, f.name)
        if inner is not None and isinstance(values.get(f.name), dict):
            values[f.name] = config_from_dict(inner, values[f.name], where, f"{prefix}{f.name}.")
    unknown = sorted(set(values) - {f.name for f in fields})
    if unknown:
        raise CorarecError(f"{where}: unknown setting(s) {', '.join(prefix + str(u) for u in unknown)}; "
                           f"known: {', '.join(sorted(f.name for f in fields))}")
    missing = [f.name for f in fields if f.name not in values and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise CorarecError(f"{where}: missing setting(s) {', '.join(prefix + m for m in missing)}")
    try:
        config = cls(**values)
        if not isinstance(config, Settings):
            validate(config)
    except SettingError as e:
        raise CorarecError(f"{where}: {prefix}{e}") from None
    return config


def apply_settings(obj: T, values: Any, where: str, prefix: str = "") -> T:
    """A copy of config ``obj`` with ``values`` (a mapping) set, validated; unknown names are an error.

    A nested config given as a mapping is updated field by field (``{"generator": {"depth": 2}}``
    changes the depth only); ``prefix`` names the nesting in errors (``generator.``)."""
    values = mapping(values, where, prefix.rstrip(".") or "settings")
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CorarecError(f"{where}: unknown setting(s) {', '.join(prefix + str(u) for u in unknown)}; "
                           f"known: {', '.join(sorted(names))}")
    for name, value in values.items():
        if nested_class(type(obj), name) is not None and isinstance(value, dict):
            values[name] = apply_settings(getattr(obj, name), value, where, f"{prefix}{name}.")
    try:
        config = dataclasses.replace(obj, **values)
        if not isinstance(config, Settings):
            validate(config)
    except SettingError as e:
        raise CorarecError(f"{where}: {prefix}{e}") from None
    return config


def mapping(data: Any, where: str, what: str) -> dict[str, Any]:
    """``data`` as a dict; None is empty; anything else but a mapping is an error."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CorarecError(f"{where}: {what} must be a mapping of names to values, got {type(data).__name__}")
    return dict(data)


# --- checking one value against its annotation ------------------------------------------------------

class _Mismatch(Exception):
    """A value does not have the annotated type (internal)."""


def _checked(value: Any, hint: Any, rule: Rule | None, name: str, error: type = SettingError) -> Any:
    try:
        value = _coerce(value, hint)
    except _Mismatch:
        raise error(f"{name} must be {_describe(hint)}, got {_show(value)}") from None
    problem = rule.problem(value) if (rule is not None and value is not None) else None
    if problem:
        raise error(f"{name} {problem}, got {_show(value)}")
    return value


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` if it has type ``hint`` (normalised: list → tuple, int → float), else :class:`_Mismatch`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arm)
            except _Mismatch:
                pass
        raise _Mismatch
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if origin in (dict, list):
        if isinstance(value, origin):
            return value
        raise _Mismatch
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Mismatch


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(arms) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is dict or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} settings"
    names = {int: "an integer", float: "a finite number", str: "text", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _either(choices: tuple[Any, ...]) -> str:
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

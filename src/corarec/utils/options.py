"""Settings by flat name, and the command-line options generated from them.

A config dataclass (:mod:`corarec.utils.settings`) is the one source of a setting: its name, type,
rule, default and description. This module derives the rest from it:

- :func:`flat_fields`: every setting by its *flat name*: a field ``lr`` is ``lr``, a field of a
  nested config is ``<field>_<subfield>`` (CoRA's ``generator.depth`` is ``generator_depth``). The
  flat names are the keyword arguments of :func:`corarec.training.loop.train` and
  :func:`corarec.cf.train_cf`; :func:`nest` turns them back into the nested mapping a config takes.
- :func:`setting_options` / :func:`with_options`: one command-line option per flat name
  (``--generator-depth``; a bool is ``--x/--no-x``), typed as the field, its help the field's
  description and default. Every option defaults to None, "not given", so that a preset and the
  dataclass default apply underneath. Configs that share a field (CoRA's and TALLRec's ``rank``)
  share one option, whose help names each one's default.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from corarec.errors import CorarecError
from corarec.utils.settings import doc_of, nested_class


@dataclass(frozen=True)
class FlatField:
    """A setting of a config class, nested ones included, under its flat name (``generator_depth``)."""

    name: str
    path: tuple[str, ...]
    """Field names from the outer config inwards: ``("generator", "depth")``."""
    hint: Any
    """The field's annotation."""
    doc: str
    """The field's description."""
    default: Any
    """Its value in the config the names were read from (a class: its defaults)."""


def flat_fields(config: Any) -> dict[str, FlatField]:
    """Every setting of config ``config`` (a class whose fields all have defaults, or an instance)
    by flat name, in declaration order; a nested config's fields are named ``<field>_<subfield>``."""
    instance = config() if isinstance(config, type) else config
    hints = typing.get_type_hints(type(instance))
    found: dict[str, FlatField] = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if nested_class(type(instance), f.name) is not None:
            for sub in flat_fields(value).values():
                name = f"{f.name}_{sub.name}"
                found[name] = dataclasses.replace(sub, name=name, path=(f.name, *sub.path))
        else:
            found[f.name] = FlatField(f.name, (f.name,), hints[f.name], doc_of(f), value)
    return found


def nest(config: Any, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Flat settings (``{"generator_depth": 2}``) as the mapping a config is updated with
    (``{"generator": {"depth": 2}}``); a name that is no setting of ``config`` is an error."""
    fields = flat_fields(config)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CorarecError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    nested: dict[str, Any] = {}
    for name, value in values.items():
        *outer, last = fields[name].path
        target = nested
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = value
    return nested


@dataclass(frozen=True)
class Option:
    """One generated command-line option."""

    name: str
    """The keyword argument it is passed as (a flat setting name)."""
    flags: tuple[str, ...]
    annotation: Any
    """The type the command line parses it as (always Optional: None = not given)."""
    help: str
    panel: str | None = None
    """The ``--help`` section it is listed in."""


def setting_options(sources: Sequence[tuple[str, Any]], panel: str | None = None,
                    exclude: Sequence[str] = ()) -> list[Option]:
    """One option per flat setting of the configs in ``sources`` (``(label, config class or instance)``;
    the labels name the configs in the help where their defaults differ or only some have the setting),
    but those named in ``exclude``.

    A name several configs share must have the same type and description in each (else ValueError:
    two meanings under one option)."""
    entries: dict[str, list[tuple[str, FlatField]]] = {}
    for label, config in sources:
        for name, flat in flat_fields(config).items():
            if name not in exclude:
                entries.setdefault(name, []).append((label, flat))
    labels = [label for label, _ in sources]
    options = []
    for name, found in entries.items():
        hints = {repr(flat.hint) for _, flat in found}
        docs = {flat.doc for _, flat in found}
        if len(hints) > 1 or len(docs) > 1:
            raise ValueError(f"setting '{name}' has different types or descriptions in {', '.join(l for l, _ in found)}")
        flat = found[0][1]
        if not flat.doc:
            raise ValueError(f"setting '{name}' has no description (setting(..., doc=...))")
        options.append(Option(name, _flags(name, flat.hint), _annotation(flat.hint),
                              f"{plain(flat.doc).removesuffix('.')} ({_defaults_text(found, labels)}).", panel))
    return options


def with_options(options: Sequence[Option]) -> Callable[[Callable], Callable]:
    """Give a command (a function taking ``**settings``) one typer option per element of ``options``,
    after its own parameters; typer then passes each given option as a keyword (None when not given)."""
    import typer

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        clash = {p.name for p in own} & {o.name for o in options}
        if clash:
            raise ValueError(f"{command.__name__}: generated options clash with its own: {', '.join(sorted(clash))}")
        generated = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, annotation=o.annotation,
                                       default=typer.Option(None, *o.flags, help=o.help, show_default=False,
                                                            rich_help_panel=o.panel))
                     for o in options]
        command.__signature__ = signature.replace(parameters=[*own, *generated])
        return command

    return decorate


def plain(doc: str) -> str:
    """A description without its reStructuredText markup (``x`` → x, :class:`~a.B` → B, :mod:`a.b` → a.b)."""
    doc = re.sub(r":\w+:`~(?:[\w.]*\.)?([^`]+)`", r"\1", doc)
    doc = re.sub(r":\w+:`([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def _defaults_text(found: list[tuple[str, FlatField]], labels: list[str]) -> str:
    by_value: dict[str, list[str]] = {}
    for label, flat in found:
        by_value.setdefault(_show(flat.default), []).append(label)
    if len(by_value) == 1 and len(found) == len(labels):
        return f"default: {next(iter(by_value))}"
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in by_value.items())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value)
    return str(value)


def _flags(name: str, hint: Any) -> tuple[str, ...]:
    flag = "--" + name.replace("_", "-")
    return (f"{flag}/--no-{flag[2:]}",) if _bare(hint) is bool else (flag,)


def _bare(hint: Any) -> Any:
    """``hint`` without ``| None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return arms[0] if len(arms) == 1 else typing.Union[tuple(arms)]
    return hint


def _annotation(hint: Any) -> Any:
    bare = _bare(hint)
    if typing.get_origin(bare) is tuple:
        bare = typing.Tuple[typing.get_args(bare)]
    return Optional[bare]

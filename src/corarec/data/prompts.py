"""Prompt templates: the TALLRec-style pure-text prompt that CoRA reads, and CoLLM's variant.

The TALLRec prompt of the paper (``template="tallrec"``)::

    #Question: A user has given high ratings to the following movies: "A", "B", "C". Leverage the
    information to predict whether the user would enjoy the movie titled "T"? Answer with "Yes" or
    "No".
    #Answer:

- ``<HISTORY>``: the last ``max_history`` (10) liked titles, oldest first, each in double quotes,
  joined by ", "; :data:`NO_HISTORY` when the user has none. A double quote inside a title becomes
  a single quote so that the quoting stays unambiguous.
- The line break before ``#Answer:`` is a real newline. The official CoLLM/CoRA prompt files hold
  a literal backslash-n (two characters) there, an artefact of how they were written; the template
  ``"tallrec-literal"`` reproduces that byte for byte.
- The prompt ends with ``#Answer:``; the LLM's next token (" Yes" / " No") is the answer.

CoLLM's prompt (``template="collm"``) adds the placeholders :data:`USER_TOKEN` and
:data:`ITEM_TOKEN`, whose token embeddings a CoLLM model replaces by mapped CF embeddings.

:func:`template_id` names a template by content (name + hash of its text), so anything cached
per prompt (the prefix cache) is invalidated whenever a template's wording changes.
"""

from __future__ import annotations

import hashlib

from corarec.errors import CorarecError

USER_TOKEN = "<UserID>"
"""CoLLM placeholder replaced by the user's mapped CF embedding."""
ITEM_TOKEN = "<TargetItemID>"
"""CoLLM placeholder replaced by the target item's mapped CF embedding."""
NO_HISTORY = "(none yet)"
"""What ``<HISTORY>`` becomes for a user with no liked items."""
MAX_HISTORY = 10
"""Liked titles shown in a prompt (the paper's value)."""

_TALLREC = (
    "#Question: A user has given high ratings to the following {nouns}: {history}. "
    "Leverage the information to predict whether the user would enjoy the {noun} titled {target}? "
    'Answer with "Yes" or "No". {newline}#Answer:'
)
_COLLM = (
    "#Question: A user has given high ratings to the following {nouns}: {history}. "
    f"Additionally, we have information about the user's preferences encoded in the feature {USER_TOKEN}. "
    "Using all available information, make a prediction about whether the user would enjoy the "
    f"{{noun}} titled {{target}} with the feature {ITEM_TOKEN}? "
    'Answer with "Yes" or "No". {newline}#Answer:'
)
TEMPLATES: dict[str, tuple[str, str]] = {
    # name: (text, what stands before "#Answer:")
    "tallrec": (_TALLREC, "\n"),
    "tallrec-literal": (_TALLREC, "\\n"),
    "collm": (_COLLM, "\n"),
}
"""Known templates: name → (text with ``{nouns} {noun} {history} {target} {newline}``, newline)."""


def build_prompt(
    history_titles: list[str],
    target_title: str,
    item_noun: str,
    template: str = "tallrec",
    max_history: int = MAX_HISTORY,
) -> str:
    """The prompt for one row: ``history_titles`` oldest first (only the last ``max_history`` are shown)."""
    text, newline = _template(template)
    shown = history_titles[-max_history:] if max_history > 0 else []
    history = ", ".join(_quote(t) for t in shown) if shown else NO_HISTORY
    return text.format(
        nouns=_plural(item_noun), noun=item_noun, history=history, target=_quote(target_title), newline=newline
    )


def template_id(template: str = "tallrec", max_history: int = MAX_HISTORY) -> str:
    """A stable id of a template's exact wording, e.g. ``tallrec-3f9a1c2b`` (changes when the text does)."""
    text, newline = _template(template)
    digest = hashlib.sha256(f"{text}|{newline}|{NO_HISTORY}|{max_history}".encode()).hexdigest()[:8]
    return f"{template}-{digest}"


def _template(template: str) -> tuple[str, str]:
    if template not in TEMPLATES:
        raise CorarecError(f"prompt template {template!r}: expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template]


def _quote(title: str) -> str:
    return '"' + str(title).replace('"', "'").strip() + '"'


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"

"""The fixed probe sets of ``corarec ability``: what the LLM knows apart from recommending.

Three probes, each a list of texts fixed by this module (and by the dataset for the first):

- **item knowledge**: the titles of the dataset that end in a year, ``"Toy Story (1995)"``, read as
  :data:`ITEM_TEMPLATE` (``The movie "Toy Story" was released in the year``) and continued by
  ``" 1995"``. A trailing article moves to the front (``"Shawshank Redemption, The"`` → ``"The Shawshank
  Redemption"``). ``titles`` of them are drawn with ``seed`` (:func:`year_items`).
- **general text**: English prose shipped with Python itself, the paragraphs of ``pydoc_data.topics``
  (the language reference's help texts) that read as prose (:func:`is_prose`), each cut to its first
  :data:`TEXT_WORDS` words; ``n`` of them are drawn with ``seed`` (:func:`text_passages`). The text
  comes from the running Python, so results name its version and the passages' SHA-256
  (:func:`digest`): two results compare only when the digests match.
- **instruction following**: ``questions.json`` beside this file, 40 general-knowledge yes/no questions
  with their answers (half Yes), asked as :data:`QUESTION_TEMPLATE`, the recommendation prompt's format.

The sets are versioned: :data:`PROBES_VERSION` changes whenever a template, the selection rules or
``questions.json`` change (a test pins their contents).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corarec.errors import CorarecError

PROBES_VERSION = 1
"""Version of the probe sets: templates, selection rules and ``questions.json``."""
ITEM_TEMPLATE = 'The {noun} "{title}" was released in the year'
"""What the LLM reads before the year of an item (a neutral completion, no question)."""
QUESTION_TEMPLATE = '#Question: {question} Answer with "Yes" or "No". \n#Answer:'
"""A yes/no question, asked the way the recommendation prompt asks (``tallrec`` template)."""
TEXT_WORDS = 40
"""Words kept of each prose paragraph (a passage is 50–70 tokens for the usual tokenizers)."""
QUESTIONS_FILE = Path(__file__).with_name("questions.json")

_YEAR_TITLE = re.compile(r"^(?P<name>.*\S)\s*\((?P<year>\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(?P<rest>.*\S), (?P<article>The|A|An)$")


@dataclass(frozen=True)
class YearItem:
    """An item of the dataset whose title carries a year."""

    item_id: int
    title: str
    """The title as the probe writes it (without the year, article in front)."""
    year: str


def year_items(titles: list[str], n: int, seed: int = 0) -> list[YearItem]:
    """``n`` items (fewer when fewer carry a year) drawn with ``seed`` among ``titles`` (indexed by item id)
    that end in ``(YYYY)``; in item-id order."""
    candidates = []
    for item_id, title in enumerate(titles):
        match = _YEAR_TITLE.match(str(title))
        if match:
            candidates.append(YearItem(item_id, display_title(match["name"]), match["year"]))
    if len(candidates) <= n:
        return candidates
    chosen = np.random.default_rng(seed).choice(len(candidates), size=n, replace=False)
    return [candidates[i] for i in sorted(chosen)]


def display_title(name: str) -> str:
    """A catalogue title as it is said: ``"Usual Suspects, The"`` → ``"The Usual Suspects"``."""
    match = _TRAILING_ARTICLE.match(name.strip())
    return f"{match['article']} {match['rest']}" if match else name.strip()


def item_prompt(item: YearItem, noun: str) -> tuple[str, str]:
    """``(context, continuation)`` of the item-knowledge probe: the neutral sentence and ``" YYYY"``."""
    return ITEM_TEMPLATE.format(noun=noun, title=item.title.replace('"', "'")), " " + item.year


def is_prose(paragraph: str, min_words: int = TEXT_WORDS) -> bool:
    """A paragraph of running English text: starts like a sentence, at least ``min_words`` words, and at
    least 85 % of its non-space characters are letters (tables, code and grammar rules are not)."""
    if not re.match(r"[A-Z][a-z]", paragraph):
        return False
    chars = "".join(paragraph.split())
    return len(paragraph.split()) >= min_words and sum(c.isalpha() for c in chars) >= 0.85 * len(chars)


def text_passages(n: int, seed: int = 0, words: int = TEXT_WORDS, topics: dict[str, str] | None = None) -> list[str]:
    """``n`` prose passages (fewer when fewer exist) of ``words`` words each, drawn with ``seed`` from the
    paragraphs of ``topics`` (default: ``pydoc_data.topics``), in topic then paragraph order."""
    if topics is None:
        from pydoc_data.topics import topics
    paragraphs = [" ".join(p.split()[:words]) for key in sorted(topics)
                  for p in re.split(r"\n\s*\n", topics[key]) if is_prose(p, words)]
    if not paragraphs:
        raise CorarecError("general-text probe: no prose paragraph found in pydoc_data.topics")
    if len(paragraphs) <= n:
        return paragraphs
    chosen = np.random.default_rng(seed).choice(len(paragraphs), size=n, replace=False)
    return [paragraphs[i] for i in sorted(chosen)]


def load_questions(path: Path = QUESTIONS_FILE) -> list[tuple[str, bool]]:
    """The fixed yes/no questions: ``(question, answer is Yes)``."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["questions"]
        return [(str(row["question"]), {"Yes": True, "No": False}[row["answer"]]) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorarecError(f"{path}: not a questions file ({type(e).__name__}: {e})") from None


def question_prompt(question: str) -> str:
    """The prompt of one yes/no question."""
    return QUESTION_TEMPLATE.format(question=question)


def digest(texts: list[str]) -> str:
    """SHA-256 of a list of texts (what identifies a probe set in a result file)."""
    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()

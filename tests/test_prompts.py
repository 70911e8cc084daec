"""The TALLRec and CoLLM prompt templates."""

import pytest

from corarec.data.prompts import ITEM_TOKEN, NO_HISTORY, USER_TOKEN, build_prompt, template_id
from corarec.errors import CorarecError


def test_tallrec_prompt_is_exactly_the_paper_text():
    prompt = build_prompt(["Heat", "Alien"], "Toy Story", "movie")
    assert prompt == (
        '#Question: A user has given high ratings to the following movies: "Heat", "Alien". Leverage the '
        'information to predict whether the user would enjoy the movie titled "Toy Story"? '
        'Answer with "Yes" or "No". \n#Answer:'
    )


def test_history_keeps_the_last_ten_oldest_first():
    titles = [f"T{i}" for i in range(15)]
    prompt = build_prompt(titles, "X", "book")
    shown = prompt.split("books: ")[1].split(". Leverage")[0]
    assert shown == ", ".join(f'"T{i}"' for i in range(5, 15))
    assert "the book titled" in prompt
    assert build_prompt(titles, "X", "book", max_history=2).count('"T') == 2


def test_empty_history_gets_the_placeholder_and_quotes_inside_titles_are_neutralised():
    assert f"movies: {NO_HISTORY}." in build_prompt([], "X", "movie")
    prompt = build_prompt(['Say "Hi"'], 'The "Best" One', "movie")
    assert "\"Say 'Hi'\"" in prompt and "\"The 'Best' One\"" in prompt


def test_literal_variant_and_collm_placeholders():
    literal = build_prompt(["A"], "B", "movie", template="tallrec-literal")
    assert literal.endswith('"No". \\n#Answer:') and "\n" not in literal
    collm = build_prompt(["A"], "B", "movie", template="collm")
    assert USER_TOKEN in collm and ITEM_TOKEN in collm and collm.endswith("#Answer:")
    assert collm.index(USER_TOKEN) < collm.index('"B"') < collm.index(ITEM_TOKEN)


def test_template_ids_are_stable_and_distinct():
    # pinned: the id keys every prefix cache, so a change of wording (or of how the id is made) shows up here
    assert [template_id(t) for t in ("tallrec", "tallrec-literal", "collm")] == [
        "tallrec-1b030818", "tallrec-literal-74ec25d4", "collm-c08b9893"]
    ids = {template_id(t) for t in ("tallrec", "tallrec-literal", "collm")}
    assert len(ids) == 3
    assert template_id("tallrec", max_history=5) != template_id("tallrec")
    with pytest.raises(CorarecError, match="prompt template 'nope'"):
        build_prompt([], "X", "movie", template="nope")

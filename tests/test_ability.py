"""``corarec ability``: the fixed probe sets, each probe's scoring against hand-computed values (a bigram
model whose log-probabilities follow from a formula), batching against one row at a time on a tiny
Llama, CoRA's per-pair increment (shared lower layers, broadcast factor) against the plain forward, the
LoRA runs against their base, and the command line."""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from corarec.cli import app
from corarec.errors import CorarecError
from corarec.evaluation.ability import RESULT_KEY, ability, format_ability, pair_variant, probe_batches, score_variants
from corarec.evaluation.probes import (ITEM_TEMPLATE, PROBES_VERSION, QUESTION_TEMPLATE, QUESTIONS_FILE, TEXT_WORDS,
                                       YearItem, display_title, is_prose, item_prompt, load_questions,
                                       question_prompt, text_passages, year_items)
from corarec.evaluation.probes.scoring import Tally, continuation_batches, question_batches
from corarec.llm.model import LLM, NO, YES, single_token_id
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig
from numerics import assert_within, rounding_tolerance, score_tolerance, scaled_delta_weights, within

runner = CliRunner()
QUESTIONS_SHA256 = "e04d9b89ec7a45ae478ec701f0c0709a242be82d11c178b057fb3f66ca26edf3"


# ---- the probe sets are fixed and versioned -------------------------------------------------------

def test_probe_sets_are_pinned_to_their_version():
    """Editing a template or questions.json without a new PROBES_VERSION (and this pin) fails here."""
    assert PROBES_VERSION == 1 and TEXT_WORDS == 40
    assert ITEM_TEMPLATE == 'The {noun} "{title}" was released in the year'
    assert QUESTION_TEMPLATE == '#Question: {question} Answer with "Yes" or "No". \n#Answer:'
    assert hashlib.sha256(QUESTIONS_FILE.read_bytes()).hexdigest() == QUESTIONS_SHA256
    questions = load_questions()
    assert len(questions) == 40 and sum(a for _, a in questions) == 20
    assert len({q for q, _ in questions}) == 40


def test_year_titles_and_prose_passages_are_drawn_the_same_way_every_time():
    titles = ["Toy Story (1995)", "Usual Suspects, The (1995)", "Heat", "An Affair, A (2001)", "Bad (199)"]
    assert year_items(titles, 10) == [YearItem(0, "Toy Story", "1995"), YearItem(1, "The Usual Suspects", "1995"),
                                      YearItem(3, "A An Affair", "2001")]
    assert display_title("City of Lost Children, The") == "The City of Lost Children"
    many = [f"Film {i} ({1900 + i})" for i in range(50)]
    drawn = year_items(many, 5, seed=3)
    assert drawn == year_items(many, 5, seed=3) != year_items(many, 5, seed=4)
    assert [d.item_id for d in drawn] == sorted(d.item_id for d in drawn) and len(drawn) == 5
    assert item_prompt(YearItem(0, 'Say "Hi"', "1999"), "movie") == ('The movie "Say \'Hi\'" was released in the year', " 1999")

    sentence = "The quick brown fox jumps over the lazy dog and keeps running far away. "
    topics = {"b": (sentence * 5 + "\n\n" + "    code = 1\n\n") * 3, "a": "+---+---+ | table | " * 20 + "\n\n" + sentence * 4}
    assert is_prose(sentence * 4) and not is_prose("    " + sentence * 4) and not is_prose(sentence)
    passages = text_passages(10, topics=topics)
    assert len(passages) == 4 and all(len(p.split()) == TEXT_WORDS for p in passages)
    real = text_passages(200, seed=0)
    assert real == text_passages(200, seed=0) != text_passages(200, seed=1)
    assert len(real) == 200 and all(len(p.split()) == TEXT_WORDS for p in real)


# ---- each probe's scoring, against values computed by hand ----------------------------------------

class Bigram(nn.Module):
    """A language model whose next-token logits depend on the current token only: 0 everywhere, except
    ``boosts[(a, b)]`` at token ``b`` after token ``a``. So log P(b | a) has a closed form."""

    def __init__(self, vocab: int, boosts: dict[tuple[int, int], float]):
        super().__init__()
        self.vocab, self.boosts = vocab, boosts
        self.config = SimpleNamespace(vocab_size=vocab)
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the LLM wrapper

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for (a, b), value in self.boosts.items():
            logits[..., b] += value * (input_ids == a)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:])

    def log_p(self, a: int, b: int) -> float:
        row = {nb: v for (na, nb), v in self.boosts.items() if na == a}
        norm = math.log(sum(math.exp(v) for v in row.values()) + self.vocab - len(row))
        return row.get(b, 0.0) - norm


def bigram_llm(tokenizer, boosts) -> LLM:
    model = Bigram(len(tokenizer), boosts)
    return LLM(model=model, tokenizer=tokenizer, name="bigram", yes_id=single_token_id(tokenizer, YES, "b"),
               no_id=single_token_id(tokenizer, NO, "b"), hidden_size=1, n_layers=1)


def chain(tokenizer, context: str, continuation: str) -> list[int]:
    """The last context token followed by the continuation's tokens (the scored transitions)."""
    ids = tokenizer(context + continuation)["input_ids"]
    return ids[len(tokenizer(context)["input_ids"]) - 1:]


def tally(llm, batches) -> Tally:
    (result,) = score_variants(llm, batches, [lambda _: torch.no_grad()], 0)
    return result


def test_item_year_accuracy_and_logprob_equal_the_bigram_formula(tokenizer):
    right, wrong = item_prompt(YearItem(0, "Heat", "1984"), "movie"), item_prompt(YearItem(1, "Alien", "2017"), "movie")
    steps = chain(tokenizer, *right)
    assert len(steps) == 6  # "year" → " ", "1", "9", "8", "4": no token repeats, so no row is boosted twice
    llm = bigram_llm(tokenizer, {(a, b): 15.0 for a, b in zip(steps, steps[1:])})
    expected = [sum(llm.model.log_p(a, b) for a, b in zip(c, c[1:])) for c in (steps, chain(tokenizer, *wrong))]
    for batch_size in (1, 2):
        metrics = tally(llm, continuation_batches(tokenizer, "item", [right, wrong], batch_size, len(tokenizer))).metrics()
        assert metrics["item_year_accuracy"] == 0.5  # greedy writes 1984 after "Heat", not 2017 after "Alien"
        # the logits are exact (0 or 15); the fp32 log-sum-exp over the vocabulary rounds, once per scored token
        assert_within(metrics["item_year_logprob"], sum(expected) / 2, 10 * rounding_tolerance(1.0, len(tokenizer)) / 2)
    assert expected[0] > -0.2 > -5 > expected[1]  # the boosted year is likely, the other is not


def test_text_perplexity_equals_the_bigram_formula(tokenizer):
    passages = ["Alpha beta gamma.", "The cat sat on the mat, and the dog sat on the rug."]
    boosts = {(tokenizer("The cat")["input_ids"][0], tokenizer("The cat")["input_ids"][1]): 4.0}
    llm = bigram_llm(tokenizer, boosts)
    ids = [tokenizer(p)["input_ids"] for p in passages]  # no BOS here: the first token is the context
    nll = -sum(llm.model.log_p(a, b) for row in ids for a, b in zip(row, row[1:]))
    tokens = sum(len(row) - 1 for row in ids)
    rows = [("", p) for p in passages]
    for batch_size in (1, 2):
        metrics = tally(llm, continuation_batches(tokenizer, "text", rows, batch_size, len(tokenizer))).metrics()
        expected = math.exp(nll / tokens)  # a mean log-sum-exp error δ moves the perplexity by a factor e^δ
        assert_within(metrics["text_perplexity"], expected, expected * 2 * rounding_tolerance(1.0, len(tokenizer)))
    assert expected < len(tokenizer)  # the boost helped: below the uniform model's perplexity


def test_question_accuracy_and_yes_no_mass_equal_the_bigram_formula(tokenizer):
    prompts = [question_prompt(q) for q in ("Is ice cold?", "Is fire cold?", "Is snow white?")]
    answer_slot = tokenizer(prompts[0])["input_ids"][-1]
    llm = bigram_llm(tokenizer, {(answer_slot, single_token_id(tokenizer, YES, "b")): 3.0})
    metrics = tally(llm, question_batches(tokenizer, prompts, [True, False, True], 2)).metrics()
    assert metrics["question_accuracy"] == pytest.approx(2 / 3)  # it always says Yes
    expected_mass = (math.exp(3.0) + 1.0) / (math.exp(3.0) + len(tokenizer) - 1)
    assert metrics["question_yes_no_mass"] == pytest.approx(expected_mass, rel=1e-9)


# ---- batching on a real (tiny) transformer ---------------------------------------------------------

def test_batched_probes_equal_one_unpadded_row_at_a_time(tiny_llm):
    tok = tiny_llm.tokenizer
    rows = [item_prompt(YearItem(i, t, y), "movie") for i, (t, y) in enumerate([("Heat", "1995"), ("Up", "2009")])]
    rows += [("", p) for p in text_passages(3, seed=0)]
    batched = tally(tiny_llm, continuation_batches(tok, "item", rows[:2], 8, len(tok))
                    + continuation_batches(tok, "text", rows[2:], 8, len(tok)))
    logprob, nll, tokens = 0.0, 0.0, 0
    for index, (context, continuation) in enumerate(rows):  # the reference: a plain forward, no padding
        ids = tok(context + continuation)["input_ids"]
        start = max(len(tok(context)["input_ids"]), 1)
        with torch.no_grad():
            logp = tiny_llm.model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
        total = sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
        if index < 2:
            logprob += total
        else:
            nll, tokens = nll - total, tokens + len(ids) - start
    # each scored token reads two logits (its own and the log-sum-exp) of a forward over ≤ 80 positions
    tolerance = score_tolerance(tiny_llm.model, 80, differences=2)
    assert_within(batched.items_logprob, logprob, 2 * 5 * tolerance, "item log-probabilities")
    assert_within(batched.text_nll, nll, tokens * tolerance, "prose negative log-likelihood")
    assert batched.text_tokens == tokens and batched.items == 2 and batched.passages == 3


# ---- CoRA: one pair's increment on every probe row -------------------------------------------------

def test_cora_pair_increment_shared_lower_layers_equal_the_plain_forward(tiny_llm, tiny_cf):
    from tiny import make_cf_batch

    cora = CoRA(CoRAConfig(rank=4, alpha=8.0, layers="top:2",
                           generator=GeneratorConfig(queries=2, depth=1, heads=2, dropout=0.0)), tiny_llm, tiny_cf)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in cora.injector.named_parameters():
            if name.endswith(".P"):
                p.normal_(0, 0.5)
        factors = cora.factors(make_cf_batch(2), deterministic=True)  # [2, d, r]
    batches = probe_batches(tiny_llm, [YearItem(0, "Heat", "1995")], "movie", text_passages(3), load_questions()[:6], 4)
    assert cora.injector.first_layer == 2
    shared = score_variants(tiny_llm, batches, [pair_variant(cora.injector, factors[p:p + 1]) for p in (0, 1)], 2)
    for p in (0, 1):  # the reference: every row holds its own copy of A_p, all layers run
        (plain,) = score_variants(tiny_llm, batches, [lambda rows: cora.injector.use(factors[p:p + 1].repeat(rows, 1, 1))], 0)
        tolerance = score_tolerance(tiny_llm.model, 80, rank=4, differences=2)
        assert_within(shared[p].items_logprob, plain.items_logprob, 2 * 5 * tolerance, f"pair {p} year log-prob")
        assert_within(shared[p].text_nll, plain.text_nll, plain.text_tokens * tolerance, f"pair {p} prose")
        assert shared[p].questions_correct == plain.questions_correct
        with scaled_delta_weights(cora.injector, 1.05):  # a slightly different ΔW is caught
            (off,) = score_variants(tiny_llm, batches, [pair_variant(cora.injector, factors[p:p + 1])], 2)
        assert not within(off.text_nll, plain.text_nll, plain.text_tokens * tolerance)
    (base,) = score_variants(tiny_llm, batches, [lambda _: torch.no_grad()], 0)
    assert not within(shared[0].text_nll, shared[1].text_nll, base.text_tokens * tolerance)  # pairs differ
    assert not within(shared[0].text_nll, base.text_nll, base.text_tokens * tolerance)  # and differ from the base


# ---- whole runs --------------------------------------------------------------------------------------

SMALL = dict(pairs=3, titles=4, text_sequences=3, batch_size=4, progress=False)


def test_ability_of_a_cora_run_reports_the_base_and_each_pair(tiny_run, tmp_path):
    from corarec.llm.model import load_llm

    out = tmp_path / "ability.json"
    result = ability([tiny_run.run], out=out, **SMALL)
    assert json.loads(out.read_text())[RESULT_KEY] == PROBES_VERSION
    base, run = result["rows"]
    assert base["kind"] == "base" and run["kind"] == "cora" and run["base"] == 0 and len(run["pairs"]) == 3
    per_pair = [p["text_perplexity"] for p in run["per_pair"]]
    assert run["metrics"]["text_perplexity"]["mean"] == pytest.approx(sum(per_pair) / 3)
    assert run["diff"]["text_perplexity"] == pytest.approx(sum(per_pair) / 3 - base["metrics"]["text_perplexity"]["mean"])
    assert run["metrics"]["text_perplexity"]["std"] > 0  # pairs give different increments
    assert base["metrics"]["item_year_accuracy"]["mean"] is not None and base["titles"] == 4

    llm = load_llm(str(tiny_run.llm), autocast=False)  # the base row is the plain LLM
    from corarec.data.schema import read_dataset

    dataset = read_dataset(tiny_run.data)
    batches = probe_batches(llm, year_items(dataset.titles(), 4), "movie", text_passages(3), load_questions(), 4)
    (plain,) = score_variants(llm, batches, [lambda _: torch.no_grad()], 0)
    assert plain.metrics()["text_perplexity"] == base["metrics"]["text_perplexity"]["mean"]  # hooks without A: bit-identical
    table = format_ability(result)
    assert f"base ({tiny_run.llm})" in table and str(tiny_run.run) in table and " ± " in table


@pytest.fixture(scope="module")
def lora_runs(tiny_run, tmp_path_factory):
    from corarec.training.loop import train

    root = tmp_path_factory.mktemp("ability-lora")
    common = dict(data=tiny_run.data, llm=str(tiny_run.llm), seed=0, bf16=False, device="cpu", max_steps=2,
                  eval_every=2, batch_size=8, lr=1e-2, warmup_steps=0)
    train(method="tallrec", out=root / "tallrec", **common)
    train(method="collm", out=root / "collm", cf=tiny_run.cf, init=root / "tallrec", **common)
    train(method="icl", out=root / "icl", data=tiny_run.data, llm=str(tiny_run.llm), device="cpu", bf16=False)
    return root


def test_ability_of_lora_runs_applies_the_lora_against_one_shared_base(tiny_run, lora_runs):
    result = ability([lora_runs / "tallrec", lora_runs / "collm", tiny_run.run], **SMALL)
    base, tallrec, collm, cora = result["rows"]
    assert [r["kind"] for r in result["rows"]] == ["base", "tallrec", "collm", "cora"]
    assert tallrec["base"] == collm["base"] == cora["base"] == 0  # one LLM, one base row
    for row in (tallrec, collm):
        assert row["metrics"]["text_perplexity"]["std"] is None and "pairs" not in row
        assert row["diff"]["text_perplexity"] != 0.0  # the trained LoRA changes the LLM
    alone = ability([lora_runs / "collm"], **SMALL)["rows"][0]  # the base seen from CoLLM: adapter disabled
    assert alone["metrics"]["text_perplexity"]["mean"] == base["metrics"]["text_perplexity"]["mean"]  # disable_adapter: bit-identical


def test_ability_refuses_what_it_cannot_probe(tiny_run, lora_runs, tmp_path):
    with pytest.raises(CorarecError, match="icl trains no update of the LLM"):
        ability([lora_runs / "icl"], **SMALL)
    with pytest.raises(CorarecError, match="--pairs must be a positive integer"):
        ability([tiny_run.run], **{**SMALL, "pairs": 0})
    with pytest.raises(CorarecError, match="given twice"):
        ability([tiny_run.run, tiny_run.run], **SMALL)
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": true}')
    with pytest.raises(CorarecError, match="not replacing it"):
        ability([tiny_run.run], out=mine, **SMALL)
    assert mine.read_text() == '{"mine": true}'


def test_ability_command_prints_the_table_and_writes_the_json(tiny_run, tmp_path):
    out = tmp_path / "ability.json"
    args = ["ability", "--run", str(tiny_run.run), "--pairs", "2", "--titles", "3", "--text-sequences", "2",
            "--batch-size", "4", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| base (" in result.output and f"wrote {out}" in result.output
    assert len(json.loads(out.read_text())["rows"][1]["pairs"]) == 2
    again = runner.invoke(app, args)  # an earlier result is replaced
    assert again.exit_code == 0, again.output

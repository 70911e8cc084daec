"""Training and scoring in several processes (DDP over gloo, as CI runs it), and the CUDA paths.

Two launches of ``torchrun --standalone --nproc_per_node 2`` (1 thread per process) on the tiny
dataset, MF run and random Llama of :mod:`tiny`; this file is also what they run (``worker``):

1. train CoRA in 2 processes × batch b (fold-in 0.5, so every step draws per row; no dropout), score
   the test rows with it (``score_rows`` and ``evaluate``), then train the same run again and kill
   it (``os._exit``) right after its second checkpoint;
2. ``corarec train --resume`` of the killed run, through the command line, in 2 processes.

Compared with single-process runs trained here: 1 process × b × 2 accumulated micro-batches does the
same arithmetic as 2 processes × b (the same micro-batches, gradients scaled by powers of two and
added in one sum of two terms), so losses and weights must be bit-identical; 1 process × 2b batches
the same rows differently, so its losses and scores agree within the rounding the tests'
derivation allows (:mod:`numerics`, as ``test_golden``: the bound of one pass, again for each
training pass whose rounding the updates carried).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import assert_same_weights

SETTINGS = dict(rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2, generator_dropout=0.0,
                fold_in_fraction=0.5, max_steps=4, eval_every=1, eval_batch_size=16, warmup_steps=1, lr=1e-2)
BATCH = 4
"""b: rows per process and micro-batch."""
SCORE_BATCH = 3
"""Rows per scoring batch in the distributed scoring check (an odd number of batches: uneven shares)."""
KILL_AFTER = 2
"""The killed run stops right after its second checkpoint (of four)."""


# ---- what the launched processes run ---------------------------------------------------------------

def worker(task: str, spec: dict) -> None:
    """One process of a launch (``python tests/test_distributed.py TASK SPEC_JSON`` under torchrun)."""
    from corarec.evaluation.evaluate import evaluate, score_rows
    from corarec.training import loop
    from corarec.training.runs import load_run
    from corarec.utils import distributed

    root = Path(spec["root"])
    common = dict(method="cora", data=spec["data"], cf=spec["cf"], llm=spec["llm"], seed=0, device="cpu", bf16=False,
                  batch_size=BATCH, **SETTINGS)
    if task != "train-score-kill":
        raise SystemExit(f"unknown task {task}")
    loop.train(out=root / "ddp", **common)
    loaded = load_run(root / "ddp", device="cpu")
    rows = loaded.dataset.test
    np.save(root / f"scores-{distributed.rank()}.npy", score_rows(loaded, rows, batch_size=SCORE_BATCH))
    evaluate(root / "ddp", split="test", predictions=root / "ddp-test.csv", batch_size=SCORE_BATCH)

    original, calls = loop.validate, {"n": 0}

    def validate_then_die(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == KILL_AFTER:
            distributed.barrier()  # the checkpoint is on disk; then both processes vanish, as if killed
            os._exit(0)

    loop.validate = validate_then_die
    loop.train(out=root / "cut", **common)
    raise AssertionError("the run was meant to be killed")


def launch(args: list[str], cwd: Path) -> None:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` with 1 thread per process; fails the test on an error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"launch failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


# ---- the tests ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The inputs, both launches, and the single-process runs to compare them with."""
    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset
    from corarec.training.loop import train
    from tiny import tiny_dataset, tiny_llm_dir

    root = tmp_path_factory.mktemp("distributed")
    data = write_dataset(tiny_dataset(), root / "data")
    train_cf(data, "mf", root / "cf", dim=16, epochs=2, batch_size=32, progress=False)
    spec = dict(root=str(root), data=str(data), cf=str(root / "cf"), llm=str(tiny_llm_dir(root, hidden=64, name="llm")))
    launch([__file__, "train-score-kill", json.dumps(spec)], root)
    launch(["-m", "corarec.cli", "train", "--data", str(data), "--out", str(root / "cut"), "--resume"], root)

    common = dict(method="cora", data=data, cf=root / "cf", llm=spec["llm"], seed=0, device="cpu", bf16=False, **SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process
    try:
        train(out=root / "accumulated", batch_size=BATCH, gradient_accumulation=2, **common)
        train(out=root / "double", batch_size=2 * BATCH, **common)
    finally:
        torch.set_num_threads(threads)
    return root


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _weights(run: Path, name: str = "checkpoint/trainable.safetensors") -> dict[str, torch.Tensor]:
    from corarec.utils.io import load_tensors

    return load_tensors(run / name)


def _curve(run: Path) -> list[dict]:
    return [{k: v for k, v in point.items() if k != "seconds"} for point in _metrics(run)["valid_curve"]]


def test_two_processes_train_bit_for_bit_like_one_process_accumulating_the_same_micro_batches(launched):
    ddp, accumulated = launched / "ddp", launched / "accumulated"
    assert _metrics(ddp)["steps"] == SETTINGS["max_steps"] and _metrics(ddp)["finished"]
    assert _curve(ddp) == _curve(accumulated)  # every step's loss and gradient norm, every validation
    assert_same_weights(ddp, accumulated)
    assert any(k.endswith(".P") and v.abs().sum() > 0 for k, v in _weights(ddp).items())  # it did train


def test_two_processes_of_batch_b_train_like_one_process_of_batch_2b(launched):
    """The same rows and draws, batched otherwise: each step's loss, and the trained model's scores,
    within the rounding bound of the passes that led to them (1 + 2 per earlier step, as test_golden)."""
    from corarec.evaluation.evaluate import score_rows
    from corarec.training.runs import load_run
    from numerics import assert_within, method_score_tolerance

    ddp, double = launched / "ddp", launched / "double"
    one_pass = method_score_tolerance(load_run(double, device="cpu").method)  # any batch of the prompts, one pass
    losses = [p["train_loss"] for p in _curve(ddp)]
    expected = [p["train_loss"] for p in _curve(double)]
    # the BCE moves by at most the logit's change (|σ(x) − y| ≤ 1); step t's logits follow t − 1 updates
    assert_within(losses, expected, [(1 + 2 * t) * one_pass for t in range(len(losses))], "training losses")
    assert one_pass < 1e-3 * min(expected)  # far below the losses: a wrong row or draw cannot hide in it

    scores = {}
    for run in (ddp, double):  # the weights after the last step
        loaded = load_run(run, device="cpu")
        loaded.method.load_trainable_state_dict(_weights(run))
        scores[run.name] = score_rows(loaded, loaded.dataset.test, progress=False)
    steps = SETTINGS["max_steps"]
    assert_within(scores["ddp"], scores["double"], (1 + 2 * steps) * one_pass, "scores of the trained models")


def test_distributed_scoring_returns_every_row_once_in_order_with_single_process_metrics(launched):
    import pandas as pd

    from corarec.evaluation.evaluate import report, score_rows
    from corarec.training.runs import load_run

    loaded = load_run(launched / "ddp", device="cpu")
    rows = loaded.dataset.test
    assert (len(rows) + SCORE_BATCH - 1) // SCORE_BATCH % 2 == 1  # an odd number of batches: shares differ
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = score_rows(loaded, rows, batch_size=SCORE_BATCH, progress=False)
    finally:
        torch.set_num_threads(threads)
    for rank in (0, 1):  # every process got every row's score, in the order of the rows: the same batches
        np.testing.assert_array_equal(np.load(launched / f"scores-{rank}.npy"), single)
    saved = json.loads((launched / "ddp" / "eval" / "test.json").read_text())
    assert saved["all"] == report(rows, single, loaded.dataset.train)["all"]
    predictions = pd.read_csv(launched / "ddp-test.csv")
    assert len(predictions) == len(rows)  # a float32 written to CSV reads back exactly (shortest repr)
    np.testing.assert_array_equal(predictions["logit"].to_numpy(np.float32), single)


def test_a_killed_two_process_run_resumes_to_where_the_uninterrupted_one_ends(launched):
    ddp, cut = launched / "ddp", launched / "cut"
    assert _metrics(cut)["finished"] and _metrics(cut)["steps"] == SETTINGS["max_steps"]
    assert _curve(cut) == _curve(ddp)
    assert_same_weights(cut, ddp)
    assert not (cut / ".lock").exists()


def test_a_checkpoint_of_two_processes_is_not_resumed_by_one(launched, tmp_path):
    import shutil

    from corarec.errors import CorarecError
    from corarec.training.loop import train

    copy = tmp_path / "copy"
    shutil.copytree(launched / "ddp", copy)
    with pytest.raises(CorarecError, match=r"written by a training in 2 process\(es\), resumed in 1"):
        train(out=copy, resume=True)


def test_the_effective_batch_is_per_process_batch_times_processes_times_accumulation():
    from corarec.utils.distributed import split_rows

    assert split_rows(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert split_rows(5, 4) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert split_rows(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]  # a short last step: empty parts


def test_under_a_launcher_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    from corarec.errors import CorarecError
    from corarec.utils.device import resolve_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(CorarecError, match="each one uses the GPU of its LOCAL_RANK"):
        resolve_device("cuda:0")
    if torch.cuda.device_count() >= 2:
        assert resolve_device("cuda") == torch.device("cuda:1")
    elif not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(CorarecError, match="WORLD_SIZE='two'"):
        resolve_device("cuda")


# ---- CUDA (skipped without a GPU; run by benchmarks/gpu_check.py) -------------------------------------
# Built without the bundled GGUF (a bare GPU machine has neither it nor the gguf package): a word-level
# tokenizer made from the dataset's own words, and randomly initialised Llamas.

def word_tokenizer(dataset):
    """A word-level tokenizer of every word of ``dataset``'s titles and prompt template (left padding;
    " Yes" and " No" single tokens after the answer slot), built in memory from the tokenizers package."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from corarec.data.prompts import build_prompt

    texts = dataset.items["title"].astype(str).tolist()
    texts += [build_prompt(["A"], "B", dataset.item_noun, template=t) for t in ("tallrec", "collm")]
    texts += [build_prompt([], "B", dataset.item_noun), "#Answer: Yes No"]
    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.padding_side = "left"
    return tokenizer


SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                    vocab_size=49152, tie_word_embeddings=True)
"""SmolLM2-135M's architecture (its config.json), for a randomly initialised model of its size."""


def random_llm_dir(out: Path, tokenizer, seed: int = 0, **config) -> Path:
    """A randomly initialised Llama (``config``: LlamaConfig fields; the vocabulary at least the
    tokenizer's) and ``tokenizer``, saved to ``out`` for ``--llm out`` (kept if already there)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    config = {"vocab_size": len(tokenizer), **config}
    config["vocab_size"] = max(config["vocab_size"], len(tokenizer))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id, **config))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def gpu_inputs(tmp_path):
    """The tiny dataset, an MF run trained on the GPU and a random 2-layer Llama with a word tokenizer."""
    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset
    from tiny import tiny_dataset

    dataset = tiny_dataset()
    data = write_dataset(dataset, tmp_path / "data")
    train_cf(data, "mf", tmp_path / "cf", dim=16, epochs=2, batch_size=32, progress=False, device="cuda")
    llm = random_llm_dir(tmp_path / "llm", word_tokenizer(dataset), **TINY_LLAMA)
    return dict(data=data, cf=tmp_path / "cf", llm=str(llm))


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "half"])
@pytest.mark.parametrize("method", ["cora", "tallrec", "collm"])
def test_training_and_scoring_on_cuda(method, bf16, gpu_inputs, tmp_path):
    """A few training steps on the GPU, in fp32 and in half precision (bf16; fp16 where bf16 is
    missing, with accelerate's loss scaler). In fp32 the trained model's scores on the GPU equal the
    same weights' scores on the CPU within numerics' fp32 bound; in half precision the frozen weights
    are stored in that dtype and training stays finite (its rounding, λ·√n·2⁻⁸ of the logits' scale,
    bounds nothing useful on scores)."""
    from corarec.evaluation.evaluate import score_rows
    from corarec.llm.model import autocast_dtype
    from corarec.training.loop import train
    from corarec.training.runs import load_run
    from numerics import assert_within, method_score_tolerance

    extra = dict(rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2) if method == "cora" else {}
    cf = gpu_inputs["cf"] if method in ("cora", "collm") else None
    metrics = train(method=method, data=gpu_inputs["data"], out=tmp_path / "run", cf=cf, llm=gpu_inputs["llm"], seed=0,
                    device="cuda", bf16=bf16, max_steps=4, eval_every=2, batch_size=8, eval_batch_size=16,
                    warmup_steps=1, lr=1e-2, **extra)
    assert metrics["finished"] and all(np.isfinite(p["train_loss"]) for p in metrics["valid_curve"])
    on_gpu = load_run(tmp_path / "run", device="cuda")
    half = autocast_dtype("cuda") if bf16 else None
    assert on_gpu.device.type == "cuda" and on_gpu.llm.autocast_dtype == half
    assert next(on_gpu.llm.model.parameters()).dtype == (half or torch.float32)  # frozen weights stored in it
    gpu = score_rows(on_gpu, on_gpu.dataset.test, progress=False)
    assert np.isfinite(gpu).all()
    if not bf16:
        on_cpu = load_run(tmp_path / "run", device="cpu")
        cpu = score_rows(on_cpu, on_cpu.dataset.test, progress=False)
        assert_within(gpu, cpu, method_score_tolerance(on_cpu.method), f"{method} scores on CUDA vs the CPU")


@pytest.mark.cuda
@cuda
def test_auto_device_trains_cf_and_cora_on_the_gpu(gpu_inputs, tmp_path):
    from corarec.cf import load_cf
    from corarec.data.schema import read_dataset
    from corarec.training.loop import train
    from corarec.training.runs import load_run

    assert next(load_cf(gpu_inputs["cf"], read_dataset(gpu_inputs["data"])).parameters()).device.type == "cpu"  # saved on the CPU
    train(method="cora", out=tmp_path / "run", seed=0, device="auto", max_steps=2, eval_every=2, batch_size=4,
          warmup_steps=1, rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2, **gpu_inputs)
    loaded = load_run(tmp_path / "run")  # the run's own device: auto
    assert loaded.device.type == "cuda" and next(loaded.method.parameters()).device.type == "cuda"


def test_the_gguf_free_tokenizer_answers_yes_and_no_in_one_token_each():
    """What the CUDA tests and benchmarks/gpu_check.py build their models with works here too."""
    from corarec.llm.model import NO, YES, single_token_id
    from tiny import tiny_dataset

    tokenizer = word_tokenizer(tiny_dataset())
    assert single_token_id(tokenizer, YES, "words") != single_token_id(tokenizer, NO, "words")
    assert tokenizer.unk_token_id not in tokenizer(tiny_dataset().items["title"].tolist()[0])["input_ids"]


if __name__ == "__main__":
    worker(sys.argv[1], json.loads(sys.argv[2]))


@pytest.mark.parametrize("command", ["benchmark", "train_cf", "predict", "recommend", "serve", "ability", "ranking"])
def test_commands_that_run_in_one_process_refuse_a_launcher_with_several(command, monkeypatch, tmp_path):
    import corarec
    from corarec.errors import CorarecError
    from corarec.evaluation.evaluate import evaluate

    monkeypatch.setenv("WORLD_SIZE", "2")
    calls = {"benchmark": lambda: corarec.benchmark(tmp_path / "d", tmp_path / "o"),
             "train_cf": lambda: corarec.train_cf(tmp_path / "d", "mf", tmp_path / "o"),
             "predict": lambda: corarec.predict(tmp_path / "r", tmp_path / "in.csv", tmp_path / "o.csv"),
             "recommend": lambda: corarec.recommend(tmp_path / "r", "u1"),
             "serve": lambda: corarec.serve(tmp_path / "r"),
             "ability": lambda: __import__("corarec.evaluation.ability", fromlist=["ability"]).ability([tmp_path / "r"]),
             "ranking": lambda: evaluate(tmp_path / "r", ranking=True)}
    with pytest.raises(CorarecError, match="runs in one process, but a launcher started 2"):
        calls[command]()
    assert not list(tmp_path.iterdir())  # refused before anything was written

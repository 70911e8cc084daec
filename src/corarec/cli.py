"""The ``corarec`` command line: one thin command per pipeline stage.

Each command calls the library function of the same name with the same arguments and prints
what it returns; there is no logic here. The settings options of ``train`` and ``train-cf`` are
generated from the config dataclasses (:mod:`corarec.utils.options`): one option per field, named
as the field (a nested one ``--generator-depth``), its help the field's description. A
:class:`~corarec.errors.CorarecError` is printed as one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from corarec.errors import CorarecError
from corarec.utils.options import Option, setting_options, with_options

app = typer.Typer(
    name="corarec",
    help="CoRA: collaborative LoRA for LLM recommendation (frozen LLM, pure-text prompt).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def prepare(
    name: str = typer.Argument(..., help="ml-100k, ml-1m, amazon-book or custom"),
    out: Path = typer.Option(..., "--out", help="Directory to write the prepared dataset to"),
    raw: Optional[Path] = typer.Option(None, "--raw", help="Directory (or file) with the raw data; ml-100k defaults to the bundled copy"),
    interactions: Optional[Path] = typer.Option(None, "--interactions", help="custom: CSV/TSV/parquet log with user, item, rating or label, timestamp"),
    items: Optional[Path] = typer.Option(None, "--items", help="custom: CSV/TSV/parquet table with item and title"),
    label_threshold: Optional[float] = typer.Option(None, "--label-threshold", help="custom: label = rating >= this (default: the log already holds 0/1 labels)"),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="custom: train,valid,test time fractions, or two cut dates 'YYYY-MM-DD,YYYY-MM-DD'"),
    item_noun: str = typer.Option("item", "--item-noun", help="custom: noun used in prompts (movie, book, ...)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the prepared dataset already in --out (any other non-empty directory is never replaced)"),
) -> None:
    """Turn raw interaction files into the prepared CTR format and print its statistics."""
    from corarec.data.prepare import prepare as prepare_fn
    from corarec.data.stats import format_stats

    ds = prepare_fn(
        name, out=out, raw=raw, interactions=interactions, items=items,
        label_threshold=label_threshold, split=split, item_noun=item_noun, overwrite=overwrite,
    )
    typer.echo(format_stats(ds.info["stats"]))
    typer.echo(f"wrote {out}")


def cf_options() -> list[Option]:
    """The options of ``train-cf`` generated from :class:`~corarec.cf.config.CFConfig` (defaults: each model's)."""
    from corarec.cf.config import CF_MODELS, make_config

    return setting_options([(model, make_config(model)) for model in CF_MODELS], "CF settings", exclude=("model",))


def train_options() -> list[Option]:
    """The options of ``train`` generated from the training loop's and every method's config dataclass."""
    from corarec.methods import REGISTRY, method_classes
    from corarec.training.config import TrainConfig

    return [*setting_options([("", TrainConfig)], "Training loop (every method)"),
            *setting_options([(name, method_classes(name)[0]) for name in REGISTRY], "Method settings")]


@app.command("train-cf")
@with_options(cf_options())
def train_cf(
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory"),
    model: str = typer.Option(..., "--model", help="mf, lightgcn or sasrec"),
    out: Path = typer.Option(..., "--out", help="Run directory to write (config.json, model.safetensors, metrics.json)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="'cpu', 'cpu-full', 'demo', 'paper' or a YAML file whose cf section applies over the model's defaults"),
    grid: bool = typer.Option(False, "--grid", help="Search the model's lr x weight-decay x dim grid; keep the best on valid AUC"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the CF run already in --out (any other non-empty directory is never replaced)"),
    **settings: Any,
) -> None:
    """Train a CF model (MF, LightGCN or SASRec) on a prepared dataset and print its metrics.

    The CF settings' defaults are the model's (configs/cf/defaults.yaml); the cf section of --preset and
    the options apply over them."""
    from corarec.cf import train_cf as train_cf_fn
    from corarec.evaluation.evaluate import format_metrics

    metrics = train_cf_fn(data=data, model=model, out=out, preset=preset, grid=grid, device=device,
                          overwrite=overwrite, **settings)
    typer.echo(format_metrics(metrics["valid"], f"valid (best epoch {metrics['best_epoch']}):"))
    typer.echo(format_metrics(metrics["test"], "test:"))
    typer.echo(f"wrote {out}")


@app.command()
@with_options(train_options())
def train(
    method: Optional[str] = typer.Option(None, "--method", help="cora (default), tallrec, collm or icl"),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared dataset directory (required for a new run; --resume reads the run's own)"),
    out: Path = typer.Option(..., "--out", help="Run directory to write"),
    cf: Optional[Path] = typer.Option(None, "--cf", help="CF run directory (from `corarec train-cf`); CoRA, CoLLM, and TALLRec with --anchor cf"),
    llm: Optional[str] = typer.Option(None, "--llm", help="HF model id, local directory, 'smollm2-135m' (bundled, default) or 'gemma3-270m' (optional package)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="'cpu', 'cpu-full', 'demo', 'paper' or a YAML file"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint"),
    init: Optional[Path] = typer.Option(None, "--init", help="Run whose weights initialise this one (CoLLM from TALLRec)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default on where supported)"),
    **settings: Any,
) -> None:
    """Train an LLM method (CoRA by default) on a prepared dataset.

    Every setting's default is shown without --preset; a preset's values apply over the defaults, the
    options over both."""
    from corarec.evaluation.evaluate import format_metrics
    from corarec.training.loop import train as train_fn

    metrics = train_fn(method=method, data=data, out=out, cf=cf, llm=llm, preset=preset, resume=resume, init=init,
                       seed=seed, device=device, bf16=bf16, **settings)
    if not is_main_process():  # under torchrun / accelerate launch: one process prints
        return
    if metrics.get("valid"):
        typer.echo(format_metrics(metrics["valid"], f"best validation (step {metrics['best_step']}):"))
    typer.echo(f"wrote {out}")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run directory (from `corarec train`); under torchrun write --run-dir (torchrun reads --run as its own --run-path)"),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared dataset (default: the one the run was trained on)"),
    split: str = typer.Option("test", "--split", help="train, valid or test"),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Score at most N rows (whole users, seeded)"),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write per-row scores to this .csv/.parquet"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows per forward pass"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
    ranking: bool = typer.Option(False, "--ranking", help="Top-k evaluation instead: CF pool re-ranked by the method, per test user (saved to RUN/eval/ranking-test.json)"),
    k: str = typer.Option("5,10,20", "--k", help="--ranking: cut-offs of Recall@k, NDCG@k, HR@k"),
    pool: int = typer.Option(100, "--pool", help="--ranking: the CF model's top N catalogue items are re-ranked"),
    max_users: int = typer.Option(50, "--max-users", help="--ranking: test users drawn (whole users, seed 0; each costs --pool scorings; 0: all)"),
    sample_seed: Optional[int] = typer.Option(None, "--sample-seed", help="Seed of the --max-samples draw (default: the run's own; valid: the seed its validation rows were drawn with)"),
) -> None:
    """Score a split with a trained run and print AUC / UAUC / GAUC (all, warm, cold); saved to RUN/eval/SPLIT.json.

    With --ranking: Recall@k, NDCG@k, HR@k and MRR of the CF order, the popularity order and the re-ranked pool."""
    from corarec.evaluation.evaluate import EVAL_DIR, evaluate as evaluate_fn, format_metrics

    metrics = evaluate_fn(run=run, data=data, split=split, max_samples=max_samples,
                          predictions=predictions, batch_size=batch_size, device=device, ranking=ranking,
                          k=k, pool=pool, max_users=max_users, sample_seed=sample_seed)
    if not is_main_process():
        return
    if ranking:
        from corarec.evaluation.ranking import RANKING_FILE, format_ranking

        typer.echo(format_ranking(metrics, f"top-k evaluation of {run} ({metrics['parts']['all']['users']} test users):"))
        typer.echo(f"wrote {run / EVAL_DIR / RANKING_FILE}")
        return
    typer.echo(format_metrics(metrics, f"{split} metrics of {run}:"))
    typer.echo(f"wrote {run / EVAL_DIR / f'{split}.json'}" + (f" and {predictions}" if predictions else ""))


@app.command()
def predict(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run directory (from `corarec train`)"),
    input: Path = typer.Option(..., "--input", help=".csv/.tsv/.parquet with user, item (raw ids), optional label, history, title (of items the dataset does not know)"),
    out: Path = typer.Option(..., "--out", help="Write the scored pairs to this .csv/.parquet"),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared dataset (default: the one the run was trained on)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows per forward pass"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Score (user, item) pairs from a file; unknown ids are scored cold-start and flagged `cold`."""
    from corarec.evaluation.evaluate import format_metrics
    from corarec.serving.predict import predict as predict_fn

    metrics = predict_fn(run=run, input=input, out=out, data=data, batch_size=batch_size, device=device)
    if metrics is not None:
        typer.echo(format_metrics(metrics, f"metrics of {input} (warm = user and item in train):"))
    typer.echo(f"wrote {out}")


@app.command()
def recommend(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run directory (from `corarec train`)"),
    user: str = typer.Option(..., "--user", help="User id as in the original data"),
    k: int = typer.Option(10, "-k", "--k", help="How many items to recommend"),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="Items to rank: .txt (one id a line) or .csv/.parquet with an item column (and optionally title, for new items)"),
    pool: int = typer.Option(100, "--pool", help="Without --candidates: the CF model's top N items are re-ranked"),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared dataset (default: the one the run was trained on)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Top-k items for a user, with titles and scores (items the user already saw are left out)."""
    from corarec.serving.recommend import format_recommendations, recommend as recommend_fn

    table = recommend_fn(run=run, user=user, k=k, candidates=candidates, pool=pool, data=data, device=device)
    typer.echo(format_recommendations(table))


@app.command()
def serve(
    run: Path = typer.Option(..., "--run", "--run-dir", help="Run directory (from `corarec train`)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared dataset (default: the one the run was trained on)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Score concurrent requests together"),
    max_batch_size: int = typer.Option(64, "--max-batch-size", help="Most rows in one batched model call"),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", help="How long a request may wait for others to join its batch (0: batch only what queued up while the model was busy)"),
    max_pairs: int = typer.Option(1000, "--max-pairs", help="Most pairs in one /score request"),
    max_k: int = typer.Option(100, "--max-k", help="Largest k of /recommend"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Largest request body; a larger one gets 413 before it is parsed"),
    token: Optional[str] = typer.Option(None, "--token", help="Require 'Authorization: Bearer TOKEN' (default: $CORAREC_TOKEN, which stays out of the process list)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve a run over HTTP: POST /score, POST /recommend, GET /health, GET /info (docs at /docs)."""
    from corarec.serving.server import serve as serve_fn

    serve_fn(run=run, host=host, port=port, data=data, device=device, batching=batching,
             max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_pairs=max_pairs, max_k=max_k,
             max_body_bytes=max_body_bytes, token=token, threads=threads, log_level=log_level)


@app.command()
def benchmark(
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory"),
    out: Path = typer.Option(..., "--out", help="Directory for the runs, results.md/.csv and the plots"),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated, e.g. mf,tallrec,cora-mf (default: all of the paper's table and the two rate references)"),
    preset: Optional[str] = typer.Option("cpu", "--preset", help="'cpu', 'cpu-full', 'demo', 'paper' or a YAML file"),
    seeds: str = typer.Option("0", "--seeds", "--seed", help="Training seeds, e.g. 0,1,2: each method that trains is trained once per seed (mean ± std in the table)"),
    sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of the validation and test samples: the same rows for every method and every training seed"),
    max_test_samples: Optional[int] = typer.Option(None, "--max-test-samples", help="Score at most N test rows (whole users; default: the preset's, else 4000; 0: all)"),
    max_valid_samples: Optional[int] = typer.Option(None, "--max-valid-samples", help="Validate every method on at most N rows (whole users; default: the preset's, else 4000; 0: all)"),
    tune_cf: bool = typer.Option(True, "--tune-cf/--no-tune-cf", help="Tune each CF model's lr, weight decay and dim on validation first (--no-tune-cf: the preset's cf section)"),
    llm: Optional[str] = typer.Option(None, "--llm", help="HF model id, local directory, 'smollm2-135m' (bundled, default) or 'gemma3-270m' (optional package)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default on where supported)"),
    retrain_stale: bool = typer.Option(False, "--retrain-stale", help="Rename a run trained with other settings to <dir>.stale-N and train it again (default: stop with an error)"),
    ranking: bool = typer.Option(False, "--ranking", help="Also the top-k evaluation (as evaluate --ranking) of every LLM method, on the same 50 test users"),
) -> None:
    """Train (or reuse) every method per seed; score the same validation and test rows; write the table and plots."""
    from corarec.benchmarking import benchmark as benchmark_fn

    summary = benchmark_fn(data=data, out=out, methods=methods, preset=preset, seeds=seeds, sample_seed=sample_seed,
                           max_test_samples=max_test_samples, max_valid_samples=max_valid_samples, tune_cf=tune_cf,
                           llm=llm, device=device, bf16=bf16, retrain_stale=retrain_stale, ranking=ranking)
    typer.echo(summary["table"])
    for note in summary["notes"]:
        typer.echo(note)
    if ranking:
        typer.echo(summary["ranking_table"])
    typer.echo(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'results.json'}, {out / 'roc.png'}, {out / 'valid_auc.png'}"
               + (f", {out / 'ndcg_at_k.png'}" if ranking else ""))


@app.command()
def ability(
    run: list[Path] = typer.Option(..., "--run", "--run-dir", help="Run directory of CoRA, TALLRec or CoLLM (repeat --run for several)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the results as JSON to this file (an earlier result there is replaced, nothing else)"),
    pairs: int = typer.Option(200, "--pairs", help="CoRA: test rows drawn (seeded); each (user, item) pair's increment is applied to every probe"),
    titles: int = typer.Option(200, "--titles", help="Dataset titles with a year drawn for the item-knowledge probe"),
    text_sequences: int = typer.Option(200, "--text-sequences", help="Prose passages of Python's pydoc_data.topics drawn for the perplexity probe"),
    seed: int = typer.Option(0, "--seed", help="Seed of the drawn pairs, titles and passages"),
    batch_size: int = typer.Option(16, "--batch-size", help="Probe rows per forward pass"),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared dataset (default: the one each run was trained on)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """General knowledge kept after training: year of the dataset's titles, prose perplexity and yes/no
    questions, for the base LLM and each run (CoRA: mean ± std over test pairs), with the difference to the base."""
    from corarec.evaluation.ability import ability as ability_fn, format_ability

    result = ability_fn(run=run, out=out, pairs=pairs, titles=titles, text_sequences=text_sequences, seed=seed,
                        batch_size=batch_size, data=data, device=device)
    typer.echo(format_ability(result))
    if out is not None:
        typer.echo(f"wrote {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory for the demo's dataset and runs"),
    preset: str = typer.Option("demo", "--preset", help="Preset of every stage: 'demo' (the cpu preset, shorter), "
                               "'cpu', 'cpu-full', 'paper' or a YAML file"),
    max_test_samples: Optional[int] = typer.Option(None, "--max-test-samples", help="Test rows scored (whole users; default: the preset's)"),
    seed: int = typer.Option(0, "--seed", help="Random seed"),
) -> None:
    """Run the main job on the bundled MovieLens-100K and SmolLM2 and print the results."""
    from corarec.benchmarking.demo import demo as demo_fn

    typer.echo(demo_fn(out=out, preset=preset, max_test_samples=max_test_samples, seed=seed))


def is_main_process() -> bool:
    """False in the processes other than the first under a launcher (``torchrun``, ``accelerate launch``)."""
    from corarec.utils.distributed import is_main

    return is_main()


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except CorarecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

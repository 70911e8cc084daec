"""The ``corarec`` command line: one thin command per pipeline stage.

Each command calls the library function of the same name with the same arguments and prints
what it returns; there is no logic here. A :class:`~corarec.errors.CorarecError` is printed as one
line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from corarec.errors import CorarecError

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
    interactions: Optional[Path] = typer.Option(None, "--interactions", help="custom: CSV/parquet log with user, item, rating or label, timestamp"),
    items: Optional[Path] = typer.Option(None, "--items", help="custom: CSV/parquet table with item and title"),
    label_threshold: Optional[float] = typer.Option(None, "--label-threshold", help="custom: label = rating >= this (default: the log already holds 0/1 labels)"),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="custom: train,valid,test time fractions, or two cut dates 'YYYY-MM-DD,YYYY-MM-DD'"),
    item_noun: str = typer.Option("item", "--item-noun", help="custom: noun used in prompts (movie, book, ...)"),
    overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite", help="Replace an existing output directory"),
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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory for the demo's dataset and runs"),
) -> None:
    """Run the main job on the bundled MovieLens-100K and SmolLM2 and print the results."""
    from corarec.demo import demo as demo_fn

    typer.echo(demo_fn(out=out))


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except CorarecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

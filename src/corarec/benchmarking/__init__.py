"""``corarec benchmark``: every method on the same split, backbone, budget and rows → one table.

Every method is trained once per training seed (``--seeds 0,1,2``; methods that do not train run
once), or its run is reused when it is complete and was trained with the same settings. All of them
are scored on the *same* rows, two whole-user samples drawn with the benchmark's own sample seed
(``--sample-seed``), never with a training seed:

- the validation rows: every method's valid AUC (the LLM methods also validate on exactly these rows
  while they train; CF models and references are scored on them after training);
- the test rows: the table's AUC, UAUC, warm and cold AUC, mean ± std over the seeds, and each
  method's AUC difference to MF with a paired 95% interval from a bootstrap by user
  (:mod:`corarec.evaluation.bootstrap`). CF models and references are also scored on the whole splits.

CF models are tuned on validation first (lr × weight decay × dim; ``--no-tune-cf`` keeps the preset's
``cf`` section), once per dataset; the chosen values are printed with the table. The benchmark writes::

    OUT/results.md       the table, the samples, the CF settings and warnings, the plots
    OUT/results.csv      the same, one row per method, machine-readable
    OUT/results.json     everything: samples, seeds, every seed's result, the intervals, the CF tuning
    OUT/roc.png          ROC curves of every method on the test rows (first seed)
    OUT/valid_auc.png    validation AUC per training step (LLM methods; CF models as lines)
    OUT/ndcg_at_k.png    with ``--ranking``: NDCG@k against k (:mod:`corarec.evaluation.ranking`; also a
                         "Top-k" table in results.md and ``topk_*`` columns in results.csv)
    OUT/runs/<method>/seed-N/   a method's run for training seed N (``runs/<method>/`` for one that
                         runs once), with ``benchmark.json`` (spec, rows, result) and ``test_scores.csv``
    OUT/runs/<cf>/tuning/       the CF model's tuning (:mod:`corarec.benchmarking.tune`)

Methods (``--methods``, comma-separated; default :data:`DEFAULT_METHODS`):

- ``item-rate``, ``logistic-rate``: the simple references of :mod:`corarec.cf.references`;
- ``mf``, ``lightgcn``, ``sasrec``: the CF models alone (:func:`corarec.cf.train_cf`);
- ``icl``, ``tallrec``: the zero-shot LLM and the text-only LoRA;
- ``collm-<cf>``: CoLLM on that CF model, stage 2 initialised from the ``tallrec`` run of the same seed;
- ``cora-<cf>``: CoRA on that CF model (its run of the same seed).

A method's prerequisites (its CF model, TALLRec for CoLLM) are trained too, even when not listed.
Settings come from the preset (``--preset cpu|paper|FILE.yaml``): its ``train`` and per-method
sections as for ``corarec train``; a ``cf`` section of :func:`corarec.cf.train_cf` arguments (applied
to every CF model, with optional per-model sub-sections ``mf:``, ``lightgcn:``, ``sasrec:``, and an
optional ``tune:`` grid in either); and a ``benchmark`` section whose ``max_test_samples`` and
``max_valid_samples`` are the defaults of ``--max-test-samples`` / ``--max-valid-samples``.

Modules, in the order a benchmark runs: :mod:`~corarec.benchmarking.plan` (methods, seeds),
:mod:`~corarec.benchmarking.samples` (the rows), :mod:`~corarec.benchmarking.tune` (CF settings),
:mod:`~corarec.benchmarking.runners` (one run), :mod:`~corarec.benchmarking.reuse` (layout, reuse),
:mod:`~corarec.benchmarking.aggregate` (seeds, intervals), :mod:`~corarec.benchmarking.report` and
:mod:`~corarec.benchmarking.plots` (output), :mod:`~corarec.benchmarking.run` (all of it).
"""

from corarec.benchmarking.plan import CF_LABELS, DEFAULT_METHODS, REFERENCE_LABELS, Entry, parse_entry, parse_seeds, plan
from corarec.benchmarking.report import format_count, format_markdown, format_seconds, format_table, result_row
from corarec.benchmarking.run import benchmark
from corarec.benchmarking.tune import cf_settings, tuning_grid

__all__ = ["CF_LABELS", "DEFAULT_METHODS", "REFERENCE_LABELS", "Entry", "benchmark", "cf_settings", "format_count",
           "format_markdown", "format_seconds", "format_table", "parse_entry", "parse_seeds", "plan", "result_row",
           "tuning_grid"]

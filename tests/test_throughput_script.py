"""benchmarks/throughput.py end to end on the tiny LLM and dataset: every stage is timed and tabled."""

import re

from scripts import BENCHMARKS, benchmark_script
from tiny import tiny_dataset_dir, tiny_llm_dir


def test_throughput_prints_every_stage_with_its_share_of_the_measured_peak(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports benchmarks/inference.py, as when run as a script
    throughput = benchmark_script("throughput")
    llm = tiny_llm_dir(tmp_path, hidden=32, layers=2)
    data = tiny_dataset_dir(tmp_path)
    throughput.main(["--llm", str(llm), "--data", str(data), "--rows", "4", "--batch", "2", "--repeats", "1",
                     "--layers", "top:1", "--eval-batch-sizes", "2,4", "--sweep-rows", "4",
                     "--peak-sizes", "64,128", "--shared"])
    # (no --threads: torch.set_num_threads would outlast the test)
    out = capsys.readouterr().out
    assert "non-embedding weights per layer × 2)," in out  # the tiny model's 2 layers
    assert "4 rows of tiny valid" in out and "median of 1" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "GFLOP" not in line and "---" not in line]
    stages = [r.split("|")[1].strip() for r in rows if r.count("|") == 8]
    assert stages[:2] == ["prefix-cache build (layers 0–0)", "frozen forward (2 layers)"]
    # the prefix build, then six rows for each of plain, last position and shared
    assert len(stages) == 1 + 3 * 6 and stages.count("CoRA train step, fast, cold cache") == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 7:  # stage, path, s / batch, rows/s, GFLOP/s, % of peak, vs plain
            assert float(cells[3]) > 0 and re.fullmatch(r"\d+\.\d{3}", cells[2]) and re.fullmatch(r"\d+%", cells[5])
            assert (cells[1] in ("last position", "shared")) == bool(re.fullmatch(r"\d+\.\d\d×", cells[6]))
    peak = re.search(r"matmul peak: (.*) GFLOP/s → peak (\d+) GFLOP/s", out)
    assert peak and peak.group(1).startswith("64×64×64 ") and "128×128×128 " in peak.group(1)
    assert "| 2 |" in out and "| 4 |" in out  # the scoring batch-size table

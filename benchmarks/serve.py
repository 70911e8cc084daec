"""Serving benchmark: requests/s and p50/p99 latency of ``POST /score`` on loopback, with 1, 4 and 16
concurrent clients, with and without request batching. Prints a table.

    python benchmarks/serve.py --run RUN [--requests 200] [--time-limit 20] [--clients 1,4,16]
                               [--max-wait-ms 0,5]

Modes: batching off, then batching on once per ``--max-wait-ms`` value (0 = batch only the requests
that queued up while the model was busy; 5 = also wait up to 5 ms for more). For each mode the service is started as its own process (``corarec serve`` on 127.0.0.1, a free
port), warmed up, then each client count runs until ``--requests`` requests are answered or
``--time-limit`` seconds have passed, whichever comes first. Requests hold ``--pairs`` random
(user, item) pairs of the run's test split, in raw ids. ``rows/call`` is the mean number of rows
the model scored per call (from ``/info``): 1 × pairs without batching, more when concurrent
requests were merged. Ratios in the last column compare batching on / off at the same client count,
measured in this run. When ``CORAREC_TOKEN`` is set the server requires it, and the clients send it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np


@dataclass
class Cell:
    batching: bool
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    rows_per_call: float
    errors: int
    wait_ms: float = 0.0

    @property
    def mode(self) -> str:
        return f"on, wait {self.wait_ms:g} ms" if self.batching else "off"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="Run directory (from `corarec train`)")
    parser.add_argument("--requests", type=int, default=200, help="Most requests per client-count cell")
    parser.add_argument("--time-limit", type=float, default=20.0, help="Most seconds per cell")
    parser.add_argument("--clients", default="1,4,16", help="Comma-separated concurrent client counts")
    parser.add_argument("--pairs", type=int, default=1, help="Pairs per request")
    parser.add_argument("--max-batch-size", type=int, default=64, help="Server: most rows per batched call")
    parser.add_argument("--max-wait-ms", default="0,5", help="Server: batching waits to compare, comma-separated")
    parser.add_argument("--threads", type=int, default=1,
                        help="Server: torch CPU threads (1 by default: on a shared CPU, oversubscribed threads slow it down badly)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="Seconds to wait for the server to load")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs = test_pairs(args.run, args.seed)
    clients = [int(c) for c in args.clients.split(",")]
    modes = [(False, 0.0)] + [(True, float(w)) for w in args.max_wait_ms.split(",")]
    cells: list[Cell] = []
    for batching, wait in modes:
        with server(args.run, batching, args.max_batch_size, wait, args.threads, args.start_timeout) as base:
            asyncio.run(warm_up(base, pairs, args.pairs))
            for n in clients:
                cell = asyncio.run(load(base, pairs, args.pairs, n, batching, args.requests, args.time_limit, args.seed))
                cell.wait_ms = wait
                cells.append(cell)
                print(f"  {cell.mode}, clients={n:>2}: {cell.rps:.1f} req/s", file=sys.stderr, flush=True)
    print(table(cells, args))


def test_pairs(run: Path, seed: int) -> list[dict[str, str]]:
    """(user, item) pairs of the run's test split in raw ids, shuffled (read without loading the model)."""
    from corarec.data.schema import read_dataset
    from corarec.utils.io import read_json

    ds = read_dataset(read_json(run / "config.json")["data"])
    users = {v: k for k, v in ds.user_index().items()}
    items = {v: k for k, v in ds.item_index().items()}
    test = ds.test.sample(frac=1.0, random_state=seed)
    return [{"user": users[u], "item": items[i]} for u, i in zip(test["user_id"], test["item_id"])]


class server:
    """``corarec serve`` in a subprocess on a free loopback port; yields its base URL."""

    def __init__(self, run: Path, batching: bool, max_batch_size: int, max_wait_ms: float, threads: int,
                 timeout: float):
        self.cmd = [sys.executable, "-m", "corarec.cli", "serve", "--run", str(run), "--host", "127.0.0.1",
                    "--port", str(free_port()), "--log-level", "warning", "--max-batch-size", str(max_batch_size),
                    "--max-wait-ms", str(max_wait_ms), "--threads", str(threads), "--batching" if batching else "--no-batching"]
        self.base = f"http://127.0.0.1:{self.cmd[self.cmd.index('--port') + 1]}"
        self.timeout = timeout

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "TQDM_DISABLE": "1"})
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}:\n{self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self.base
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise SystemExit(f"server did not answer /health within {self.timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def auth_headers() -> dict[str, str]:
    """The bearer token the server (which inherits this environment) will require, if any."""
    token = os.environ.get("CORAREC_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def warm_up(base: str, pairs: list[dict], per_request: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120, headers=auth_headers()) as http:
        for start in range(0, 3 * per_request, per_request):
            (await http.post("/score", json={"pairs": pairs[start:start + per_request]})).raise_for_status()


async def load(base: str, pairs: list[dict], per_request: int, clients: int, batching: bool,
               max_requests: int, time_limit: float, seed: int) -> Cell:
    """``clients`` concurrent loops of POST /score until ``max_requests`` or ``time_limit``."""
    rng = np.random.default_rng(seed + clients)
    latencies: list[float] = []
    errors = 0
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers=auth_headers()) as http:
        before = (await http.get("/info")).json()["serving"]
        started = time.perf_counter()
        stop_at = started + time_limit

        async def client() -> None:
            nonlocal issued, errors
            while issued < max_requests and time.perf_counter() < stop_at:
                issued += 1
                start = int(rng.integers(0, max(1, len(pairs) - per_request)))
                t0 = time.perf_counter()
                response = await http.post("/score", json={"pairs": pairs[start:start + per_request]})
                if response.status_code == 200:
                    latencies.append(1000 * (time.perf_counter() - t0))
                else:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
        after = (await http.get("/info")).json()["serving"]
    calls = after["batches"] - before["batches"]
    rows_per_call = (after["rows"] - before["rows"]) / calls if calls else float("nan")
    return Cell(batching, clients, len(latencies), seconds, latencies, rows_per_call, errors)


def table(cells: list[Cell], args) -> str:
    off = {c.clients: c for c in cells if not c.batching}
    lines = [f"POST /score, {args.pairs} pair(s)/request, at most {args.requests} requests or {args.time_limit:g} s "
             f"per row, max batch {args.max_batch_size} rows, {args.threads} torch thread(s)",
             "",
             "| batching | clients | requests | req/s | p50 ms | p99 ms | rows/call | errors | req/s vs off |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        ratio = f"{c.rps / off[c.clients].rps:.2f}×" if c.clients in off else "-"
        lines.append(f"| {c.mode} | {c.clients} | {c.requests} | {c.rps:.1f} | {c.pct(50):.1f} | "
                     f"{c.pct(99):.1f} | {c.rows_per_call:.2f} | {c.errors} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

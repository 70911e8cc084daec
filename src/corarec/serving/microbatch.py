"""Micro-batching: rows of concurrent requests are scored together in one model call.

Each request :meth:`~MicroBatcher.submit` s its rows and awaits their results. One worker task
takes the first waiting request, then everything else already queued, then waits at most
``max_wait_ms`` for more while fewer than ``max_batch_size`` rows are collected (with the default 0
it waits for nothing: the requests that arrived while the model was busy form the next batch, so
batching adds no latency to a lone request); it runs
``process`` once on all the rows (in a single worker thread, so the model is never called twice at
the same time and the event loop stays free), and hands each request its own slice of the results.

With ``enabled=False`` every request is processed alone, still one at a time on the same thread —
the baseline the serving benchmark compares against.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

Row = TypeVar("Row")
Result = TypeVar("Result")


@dataclass
class _Job(Generic[Row]):
    rows: list[Row]
    future: asyncio.Future = field(repr=False)


class MicroBatcher(Generic[Row, Result]):
    """Collects rows of concurrent requests into batches for ``process(rows) -> results``."""

    def __init__(self, process: Callable[[list[Row]], Sequence[Result]], max_batch_size: int = 64,
                 max_wait_ms: float = 0.0, enabled: bool = True) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be non-negative, got {max_wait_ms}")
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.enabled = enabled
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corarec-model")
        self.queue: asyncio.Queue[_Job | None] | None = None
        self.worker: asyncio.Task | None = None
        self.batches = 0
        """Model calls made so far (for tests and /info)."""
        self.rows = 0
        """Rows processed so far."""

    async def start(self) -> None:
        """Start the worker task (inside the running event loop)."""
        if self.enabled and self.worker is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._work(), name="corarec-microbatch")

    async def stop(self) -> None:
        """Finish the queued requests, stop the worker and the model thread."""
        if self.worker is not None:
            await self.queue.put(None)
            await self.worker
            self.worker = None
        self.executor.shutdown(wait=True)

    async def run(self, fn: Callable[..., Result], *args: Any) -> Result:
        """Run ``fn(*args)`` on the model thread (for model work that is not batched)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, rows: list[Row]) -> list[Result]:
        """Results of ``process`` for ``rows``, in order (batched with other requests when enabled)."""
        if not rows:
            return []
        if not self.enabled:
            results = await self.run(self.process, list(rows))
            self._count(len(rows))
            return list(results)
        if self.worker is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        job = _Job(list(rows), asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is None:
                break
            jobs, n = [first], len(first.rows)
            deadline = loop.time() + self.max_wait
            while n < self.max_batch_size:
                try:
                    job = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self.queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
                n += len(job.rows)
            await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        rows = [row for job in jobs for row in job.rows]
        try:
            results = list(await self.run(self.process, rows))
            if len(results) != len(rows):
                raise RuntimeError(f"process returned {len(results)} results for {len(rows)} rows")
        except Exception as e:  # hand the failure to every waiting request
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        self._count(len(rows))
        start = 0
        for job in jobs:
            if not job.future.done():  # a client may have gone away
                job.future.set_result(results[start:start + len(job.rows)])
            start += len(job.rows)

    def _count(self, n: int) -> None:
        self.batches += 1
        self.rows += n

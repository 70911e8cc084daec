"""Several processes, one run: corarec under ``torchrun`` or ``accelerate launch``.

A launcher starts one process per device and tells each its place through the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). The commands then run
unchanged in every process:

- :func:`start` opens the process group through accelerate (gloo on CPUs, NCCL on CUDA GPUs); each
  process uses the GPU of its ``LOCAL_RANK`` (:func:`corarec.utils.device.resolve_device`);
- training is plain data parallelism (:func:`training_accelerator`: DDP over the method's trainable
  weights, the frozen LLM replicated in every process; :mod:`corarec.training.loop` shards the rows);
- scoring splits the batches across the processes and gathers every row's score back to every
  process, in the order of the rows (:func:`corarec.evaluation.evaluate.score_rows`);
- only the main process writes run directories (:func:`is_main`). A decision that could stop a
  command (a run directory that is in use, a checkpoint that does not fit) is taken by the main
  process and shared (:func:`main_decides`), so that every process stops with the same one-line
  error instead of waiting for the others.

Without a launcher, or with one process, nothing here does anything: every function answers for a
single process and the single-process code paths are those of a plain run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import torch

from corarec.errors import CorarecError

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise CorarecError(f"environment variable WORLD_SIZE={value!r}: expected a whole number >= 1 "
                           "(set by torchrun or accelerate launch)")
    return int(value)


def one_process_only(command: str) -> None:
    """``command`` runs in one process: under a launcher that started several, one clear error instead of
    several copies racing on the same files."""
    processes = launched_processes()
    if processes > 1:
        raise CorarecError(f"{command} runs in one process, but a launcher started {processes} (torchrun or "
                           "accelerate launch); run it without the launcher (train and evaluate scale out)")


def start(device: torch.device) -> None:
    """Under a launcher with several processes, join the process group (once per process): gloo when
    ``device`` is a CPU, NCCL when it is a CUDA GPU. Does nothing otherwise."""
    if launched_processes() < 2 or active():
        return
    if device.type not in ("cpu", "cuda"):
        raise CorarecError(f"device '{device}': several processes run on CPUs (gloo) or CUDA GPUs (NCCL) only")
    from accelerate import PartialState

    PartialState(cpu=device.type == "cpu")  # reads the launcher's environment, initialises torch.distributed


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if active() else 1


def rank() -> int:
    """This process's place among them, 0 … ``world_size() - 1`` (0 without a process group)."""
    return torch.distributed.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process writes (rank 0; always True in a single process)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process got here (nothing in a single process)."""
    if active():
        torch.distributed.barrier()


def gather(value: T) -> list[T]:
    """``value`` of every process, in rank order, on every process (``[value]`` in a single process).
    Any picklable object; meant for small ones (scores of a split, a loss, RNG states)."""
    if not active():
        return [value]
    found: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(found, value)
    return found


def total(value: float) -> float:
    """The sum of ``value`` over the processes, added in rank order (so every process gets the same number)."""
    return float(sum(gather(float(value)))) if active() else float(value)


def share(value: T) -> T:
    """The main process's ``value``, on every process."""
    if not active():
        return value
    box = [value if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def main_decides(decide: Callable[[], T]) -> T:
    """Run ``decide`` on the main process only and hand its result to every process; a
    :class:`~corarec.errors.CorarecError` it raises is raised, with the same message, on every process
    (any other exception on the main process as it is there, and as a one-line error on the others)."""
    if not active():
        return decide()
    outcome: tuple[str, Any] = ("ok", None)
    failure: BaseException | None = None
    if is_main():
        try:
            outcome = ("ok", decide())
        except CorarecError as e:
            outcome = ("error", str(e))
        except BaseException as e:  # noqa: BLE001 - the others must not wait for it: tell them, then raise it
            failure, outcome = e, ("error", f"the main process stopped: {type(e).__name__}: {e}")
    kind, value = share(outcome)
    if failure is not None:
        raise failure
    if kind == "error":
        raise CorarecError(value)
    return value


@contextmanager
def main_holds(lock: Callable[[], Any], check: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Inside the block the main process holds the context manager ``lock()`` (the run directory's
    lock) and has run ``check()`` under it; the other processes hold nothing and enter only once the
    main process succeeded, else every process raises its error. In a single process: ``lock()`` and
    ``check()`` as they are."""
    if not active():
        with lock():
            check()
            yield
        return
    with ExitStack() as stack:

        def take() -> None:
            stack.enter_context(lock())
            check()

        main_decides(take)
        yield


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch RNG state of every process (and of its CUDA device on a GPU), by checkpoint key:
    ``rng.torch`` (and ``rng.cuda``) for the main process, ``rng.torch.<rank>`` for the others. The
    per-process draws (dropout) leave the processes' states apart; a resume restores each one's own."""
    mine = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = {}
    for index, theirs in enumerate(gather(mine)):
        for kind, state in theirs.items():
            states[f"rng.{kind}" + (f".{index}" if index else "")] = state
    return states


def restore_rng_state(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Set this process's RNG state from a checkpoint written by :func:`rng_states`; a process the
    checkpoint has no state of (none: a checkpoint of a single process) takes the main process's."""
    suffix = f".{rank()}" if rank() else ""
    torch.set_rng_state(tensors.get(f"rng.torch{suffix}", tensors["rng.torch"]))
    cuda = tensors.get(f"rng.cuda{suffix}", tensors.get("rng.cuda"))
    if device.type == "cuda" and cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def accelerator_for(device: torch.device, autocast_dtype: torch.dtype | None):
    """An :class:`accelerate.Accelerator` for a training on ``device`` whose LLM computes in
    ``autocast_dtype``: with several processes (DDP gradient synchronisation) or on a CUDA GPU (fp16:
    the loss scaler). None for a single process off CUDA: the plain loop, unchanged.

    Its mixed precision mirrors the LLM's autocast (bf16, fp16 or none), never adds one; DDP runs
    with every trainable weight used at every step (``find_unused_parameters`` off) and without
    broadcasting buffers (the only buffers are frozen constants)."""
    if world_size() == 1 and device.type != "cuda":
        return None
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "no"}.get(autocast_dtype)
    if precision is None:
        raise CorarecError(f"training in {autocast_dtype} is not supported; use --bf16 or --no-bf16")
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):  # an earlier run in this process
        AcceleratorState._reset_state()  # keeps the process group (PartialState)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False)
    accelerator = Accelerator(cpu=device.type != "cuda", mixed_precision=precision, kwargs_handlers=[ddp])
    kind = accelerator.distributed_type.value
    if kind not in ("NO", "MULTI_CPU", "MULTI_GPU"):  # an accelerate config asked for FSDP, DeepSpeed, ...
        raise CorarecError(f"accelerate is configured for {kind}; corarec trains with plain DDP only (the frozen "
                           "LLM replicated in every process): launch without that config (docs/scaling.md)")
    return accelerator


def frozen_names(module: torch.nn.Module) -> list[str]:
    """Names of ``module``'s frozen parameters and its buffers (a peft LoRA registers the LLM's): DDP
    leaves them alone instead of broadcasting a whole backbone that every process loaded anyway."""
    frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
    return frozen + [name for name, _ in module.named_buffers()]



def split_rows(n_rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges ``(start, stop)`` covering rows ``0 .. n_rows``, sizes apart by at
    most one (the first ones larger); a range is empty when there are fewer rows than parts."""
    size, extra = divmod(n_rows, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (part < extra))
    return list(zip(bounds[:-1], bounds[1:]))


class Scoring(torch.nn.Module):
    """A method's ``score(batch)`` as a module's forward: what DDP wraps (it synchronises the
    gradients of what its forward computed)."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch) -> torch.Tensor:
        return self.method.score(batch)  # [B]


def prepare_training(method: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator) -> tuple[Callable, Any]:
    """``(score, optimizer)`` for the training steps: ``method.score`` and ``optimizer`` themselves
    without an accelerator; else both prepared by it (DDP over the trainable weights with several
    processes, the loss scaler with fp16). Nothing is moved: every process placed its run already."""
    if accelerator is None:
        return method.score, optimizer
    module = Scoring(method)
    if world_size() > 1:
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, frozen_names(module))
    return (accelerator.prepare_model(module, device_placement=False),
            accelerator.prepare_optimizer(optimizer, device_placement=False))

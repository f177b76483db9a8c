"""Which number format the embedding model computes in, and how it is put into bfloat16.

Two things live here, apart from the engine so that they can be tested and benchmarked alone:

* **The choice** (`choose_dtype`). `EMBEDDING_DTYPE=auto` picks bfloat16 only where the CPU
  multiplies bfloat16 natively: AVX512-BF16 (`vdpbf16ps`) or AMX-BF16 tiles, as torch reports them
  in `torch.cpu.get_capabilities()` (cpuinfo, read at run time). Torch's other probes do not answer
  that question: `torch.backends.cpu.get_cpu_capability()` names only the vector level ATen's own
  kernels were built for ("AVX2", "AVX512"), and `torch.ops.mkldnn._is_mkldnn_bf16_supported()` is
  true on any AVX512 core, where oneDNN emulates bfloat16 with integer instructions (it is used
  here only as a second condition). Elsewhere bfloat16 is emulated and slower than float32: on
  this project's AVX2-only EPYC, 2x slower one sentence at a time and 12x in batches of 32
  (README, "Performance").
* **The conversion** (`to_bfloat16`). Every `nn.Linear` keeps its weights in bfloat16 and
  computes there (products accumulate in float32 inside the kernel; the result is rounded to
  bfloat16). Everything else stays float32: embeddings, LayerNorms, the residual stream (a
  bfloat16 branch added to the float32 stream is promoted to float32), pooling and normalisation.
  Attention runs in bfloat16, since its inputs come out of Linear layers. Vectors leave the model
  as float32. Measured on 2,048 fixed texts (bench/embedding_accuracy.py): minimum cosine to
  float32 0.99993, against 0.99981 for `model.to(torch.bfloat16)` on the same (emulated) kernels;
  `torch.autocast` is as accurate but casts every weight on every forward pass.
  No module names are assumed, so any sentence-transformers model converts; one whose bfloat16
  vectors stray from float32's on PROBE_TEXTS (models/embedding_engine.py checks at load) runs
  float32 instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

DTYPES = ("auto", "float32", "bfloat16")
MIN_COSINE = 0.999  # to the float32 vector: below it, vectors are no longer interchangeable with an fp32 index
_NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str  # "float32" or "bfloat16": what the model computes in
    reason: str  # why, in a few words (for /metrics and the log)


def cpu_capabilities() -> Mapping[str, object]:
    """torch's runtime CPU feature flags (cpuinfo); an older torch without the public call is asked flag by flag."""
    import torch

    if hasattr(torch.cpu, "get_capabilities"):
        return torch.cpu.get_capabilities()
    return {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx_bf16": torch.cpu._is_amx_tile_supported()}


def onednn_bf16() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_bf16(capabilities: Mapping[str, object], onednn: bool) -> str | None:
    """The flag that makes bfloat16 native on this CPU, or None."""
    if not onednn:
        return None
    return next((flag for flag in _NATIVE_FLAGS if capabilities.get(flag)), None)


def choose_dtype(setting: str, device: str = "cpu", capabilities: Mapping[str, object] | None = None,
                 onednn: bool | None = None) -> DtypeChoice:
    """What `EMBEDDING_DTYPE=setting` means on this machine (capabilities and oneDNN: torch's, unless given)."""
    if setting not in DTYPES:
        raise ValueError(f"EMBEDDING_DTYPE must be one of {', '.join(DTYPES)}, not {setting!r}")
    if setting == "float32":
        return DtypeChoice("float32", "EMBEDDING_DTYPE=float32")
    if device != "cpu":
        if setting == "bfloat16":
            return DtypeChoice("bfloat16", f"EMBEDDING_DTYPE=bfloat16 on {device}")
        return DtypeChoice("float32", f"auto: float32 on {device} (auto judges CPUs only)")
    flag = native_bf16(cpu_capabilities() if capabilities is None else capabilities,
                       onednn_bf16() if onednn is None else onednn)
    if setting == "bfloat16":
        native = f"native ({flag})" if flag else "emulated on this CPU (no AVX512-BF16 or AMX), slower than float32"
        return DtypeChoice("bfloat16", f"EMBEDDING_DTYPE=bfloat16: {native}")
    if flag:
        return DtypeChoice("bfloat16", f"auto: this CPU computes bfloat16 natively ({flag})")
    return DtypeChoice("float32", "auto: bfloat16 would be emulated on this CPU (no AVX512-BF16 or AMX)")


def _bf16_linear_class():
    import torch
    from torch import nn

    class BF16Linear(nn.Module):
        """A Linear layer computing in bfloat16: input cast to bfloat16, output left in bfloat16."""

        def __init__(self, linear: nn.Linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
            bias = linear.bias
            self.bias = None if bias is None else nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)

        def forward(self, x):
            return nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias)

    return BF16Linear


def to_bfloat16(model) -> Callable[[], None]:
    """Make every Linear of `model` compute in bfloat16 (in place); returns a function that undoes it."""
    from torch import nn

    bf16_linear = _bf16_linear_class()
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, bf16_linear(child))
                swapped.append((parent, name, child))

    def undo() -> None:
        for parent, name, child in swapped:
            setattr(parent, name, child)

    return undo


def min_cosine(reference: np.ndarray, vectors: np.ndarray) -> float:
    """The smallest cosine between matching rows of two arrays."""
    reference = np.asarray(reference, dtype=np.float64)
    vectors = np.asarray(vectors, dtype=np.float64)
    dots = np.sum(reference * vectors, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(vectors, axis=1)
    return float(np.min(dots / np.maximum(norms, 1e-30)))


# Checked at load against the float32 vectors: a few kinds of text, one past the 256-token window.
PROBE_TEXTS = [
    "How do I reset my password?",
    "ok",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "Le vieux gardien du phare a expliqué le prix du pain hier.",
    "老灯塔看守人昨天解释了面包的价格。",
    "The night train was late again, and the passengers waited on the cold platform. " * 30,
]

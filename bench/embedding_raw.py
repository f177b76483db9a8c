"""Raw sentence-transformers `encode` for the embedding benchmarks, in float32 or a bfloat16 variant.

`RawEncoder(threads, variant)` is `SentenceTransformer(path).encode(...)` as a user would call it,
on the server's torch settings (threads, OpenMP wait policy). Variants:
- `float32`: the model as loaded;
- `bfloat16`: the server's conversion (models/embedding_precision.py `to_bfloat16`);
- `full`: `model.to(torch.bfloat16)`;
- `autocast`: the float32 model under `torch.autocast("cpu", dtype=torch.bfloat16)`.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

# The server's runtime settings (models/embedding_engine.py), set before anything here imports torch:
# libgomp reads OMP_WAIT_POLICY once, at torch's import, and a spinning OpenMP thread on a busy
# 2-core machine makes raw encode several times slower than the server it is compared with.
TORCH_WAS_LOADED = "torch" in sys.modules  # then the policy below comes too late
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.embedding_load import MODEL, Measurement  # noqa: E402 - after the environment is set
from models.embedding_engine import resolve_model_source  # noqa: E402
from models.embedding_precision import cpu_capabilities, native_bf16, onednn_bf16, to_bfloat16  # noqa: E402

VARIANTS = ("float32", "bfloat16", "full", "autocast")


def cpu_summary() -> str:
    """Whether this CPU computes bfloat16 natively, as the server's `auto` judges it."""
    flag = native_bf16(cpu_capabilities(), onednn_bf16())
    return f"bfloat16 native ({flag})" if flag else "bfloat16 emulated (no AVX512-BF16 or AMX)"


class RawEncoder:
    def __init__(self, threads: int, variant: str = "float32"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.variant = variant
        self.model = SentenceTransformer(resolve_model_source(MODEL), device="cpu", local_files_only=True)
        self.model.eval()
        if variant == "bfloat16":
            to_bfloat16(self.model)
        elif variant == "full":
            self.model.to(torch.bfloat16)
        elif variant == "autocast":
            forward = self.model.forward

            def autocast_forward(*args, **kwargs):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return forward(*args, **kwargs)

            self.model.forward = autocast_forward

    def encode(self, texts: list[str], batch: int | None = None) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=batch or len(texts), show_progress_bar=False,
                                    convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def measure(self, texts: list[str], batch: int, seconds: float, max_inputs: int) -> Measurement:
        """Closed loop of `encode` calls of `batch` texts each, for `seconds` (after one warm-up call)."""
        self.encode(texts[:batch])
        out = Measurement()
        cpu, started = time.process_time(), time.perf_counter()
        deadline = started + seconds
        position = 0
        while time.perf_counter() < deadline and out.inputs < max_inputs:
            chunk = [texts[(position + k) % len(texts)] for k in range(batch)]
            position += batch
            t0 = time.perf_counter()
            self.encode(chunk)
            out.latencies.append(time.perf_counter() - t0)
            out.inputs += batch
        out.wall = time.perf_counter() - started
        out.client_cpu = time.process_time() - cpu
        return out

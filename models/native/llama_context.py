"""One llama.cpp context on a loaded model: its KV cache, the ids it holds, batches in, logits out.

Made with GPT4All's parameters (`LLamaModel::loadModel`): the library's defaults plus `n_ctx`, an
F16 KV cache and `logits_all`, so that the same batches compute the same bytes as GPT4All's prompt
call. `evaluate` puts a batch of tokens at the end of what the context holds, with logits for the
last one only, as GPT4All's `evalTokens` does. Not thread-safe: one thread uses a context.
"""

from __future__ import annotations

import ctypes

import numpy as np

from errors import EngineFailure
from models.native.llama_api import GGML_TYPE_F16, ContextParams
from models.native.llama_model import LlamaModel


class LlamaContext:
    def __init__(self, model: LlamaModel, *, n_ctx: int, n_threads: int, max_batch: int):
        self.model = model
        self._lib = model.lib
        params: ContextParams = self._lib.llama_context_default_params()
        params.n_ctx, params.type_k, params.type_v, params.logits_all = n_ctx, GGML_TYPE_F16, GGML_TYPE_F16, True
        params.n_threads = params.n_threads_batch = n_threads
        self.pointer = ctypes.c_void_p(self._lib.llama_new_context_with_model(model.pointer, params))
        if not self.pointer:
            raise EngineFailure("llama.cpp could not create a context", detail=f"llama_new_context_with_model failed for {model.path.name} (n_ctx {n_ctx})")
        self.n_ctx = self._lib.llama_n_ctx(self.pointer)
        self.max_batch = max_batch
        self._batch = self._lib.llama_batch_init(max_batch, 0, 1)
        for i in range(max_batch):  # one sequence (0) for every slot, set once
            self._batch.n_seq_id[i] = 1
            self._batch.seq_id[i][0] = 0
        self.tokens: list[int] = []  # the ids the KV cache holds, in order (position i holds tokens[i])

    def evaluate(self, tokens: list[int]) -> None:
        """Evaluate `tokens` (at most `max_batch`) after what the context holds, as one batch."""
        n, start = len(tokens), len(self.tokens)
        if not 0 < n <= self.max_batch or start + n > self.n_ctx:
            raise ValueError(f"a batch of {n} tokens after {start} does not fit (batch {self.max_batch}, context {self.n_ctx})")
        batch = self._batch
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.logits[i] = token, start + i, 0
        batch.logits[n - 1] = 1
        batch.n_tokens = n
        status = self._lib.llama_decode(self.pointer, batch)
        if status != 0:
            raise EngineFailure("the model failed to evaluate a batch", detail=f"llama_decode returned {status} at position {start}")
        self.tokens.extend(tokens)

    def logits(self) -> np.ndarray:
        """The last evaluated token's logits: a view into llama.cpp's buffer, valid until the next `evaluate`."""
        pointer = self._lib.llama_get_logits_ith(self.pointer, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.model.n_vocab,))

    def truncate(self, keep: int) -> None:
        """Forget everything after the first `keep` tokens (GPT4All's `llama_kv_cache_seq_rm(ctx, 0, n_past, -1)`)."""
        if keep < len(self.tokens):
            self._lib.llama_kv_cache_seq_rm(self.pointer, 0, keep, -1)
            del self.tokens[keep:]

    def copy_from(self, other: "LlamaContext", keep: int) -> None:
        """Hold `other`'s first `keep` tokens: its KV cache's cells for them, copied (no evaluation)."""
        self._lib.llama_kv_cache_clear(self.pointer)
        self.tokens = []
        if keep <= 0:
            return
        size = self._lib.llama_state_seq_get_size(other.pointer, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(other.pointer, buffer, 0)
        if not written or not self._lib.llama_state_seq_set_data(self.pointer, buffer, 0):
            raise EngineFailure("copying a cached prefix failed", detail="llama_state_seq_get/set_data returned 0")
        self.tokens = list(other.tokens)
        self.truncate(keep)

    def state(self) -> bytes:
        """llama.cpp's whole state (RNG, outputs, logits, KV cache): for tests that compare computations."""
        size = self._lib.llama_state_get_size(self.pointer)
        buffer = (ctypes.c_uint8 * size)()
        return bytes(buffer[: self._lib.llama_state_get_data(self.pointer, buffer)])

    def close(self) -> None:
        if self.pointer:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self.pointer)
            self.pointer = ctypes.c_void_p()

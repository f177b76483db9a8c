"""A context's computed state, as bytes: to check that reuse computes what a full evaluation does, bit for bit.

`libllmodel` exports `llmodel_save_state_data` (the Python bindings do not wrap it). llama.cpp's state
is: the sampler's RNG, the outputs' positions in their batch, the logits, the embeddings and the KV
cache. The RNG and the positions are bookkeeping (the position of the one output is its index in its
batch, which depends on how the prompt was split); the rest is arithmetic, compared here.
"""

from __future__ import annotations

import ctypes

from gpt4all._pyllmodel import llmodel

llmodel.llmodel_get_state_size.restype = ctypes.c_uint64
llmodel.llmodel_get_state_size.argtypes = [ctypes.c_void_p]
llmodel.llmodel_save_state_data.restype = ctypes.c_uint64
llmodel.llmodel_save_state_data.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8)]


def computed_state(lm) -> bytes:
    """Logits, embeddings and KV cache of a GPT4All `LLModel` (a GPT4All object's `.model`)."""
    size = llmodel.llmodel_get_state_size(lm.model)
    buffer = (ctypes.c_uint8 * size)()
    state = bytes(buffer[: llmodel.llmodel_save_state_data(lm.model, buffer)])
    rng = int.from_bytes(state[:8], "little")
    outputs_at = 8 + rng
    n_outputs = int.from_bytes(state[outputs_at : outputs_at + 8], "little")
    return state[outputs_at + 8 + 4 * n_outputs :]

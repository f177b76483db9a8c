"""A context's computed state, as bytes: to check that reuse computes what a full evaluation does, bit for bit.

llama.cpp's state (`llama_state_get_data`) is: the sampler's RNG, the outputs' positions in their
batch, the logits, the embeddings and the KV cache. The RNG and the positions are bookkeeping (the
position of the one output is its index in its batch, which depends on how the prompt was split);
the rest is arithmetic, compared here.
"""

from __future__ import annotations


def computed(state: bytes) -> bytes:
    """Logits, embeddings and KV cache of a state from `LlamaContext.state()`."""
    rng = int.from_bytes(state[:8], "little")
    outputs_at = 8 + rng
    n_outputs = int.from_bytes(state[outputs_at : outputs_at + 8], "little")
    return state[outputs_at + 8 + 4 * n_outputs :]


def computed_state(engine) -> bytes:
    """The computed state of `engine`'s most recently used context."""
    slot = max(engine._slots, key=lambda s: s.cache.last_used)
    return computed(slot.context.state())

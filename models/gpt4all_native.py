"""Raw GPT4All, as its own bindings run a model: the baseline our decode loop is held to.

`prompt` is the C call `LLModel.prompt_model` wraps (`llmodel_prompt`), with our callbacks, so that
every prompt token and every sampled token is counted. The server no longer calls it (its engine is
`models/llama_engine.py`); the benchmarks' raw baseline and the tests that compare our greedy output
with GPT4All's, token for token, do.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from errors import ModelLoadFailed
from models.interfaces import SamplingParams
from models.native.llama_model import check_header

MAX_PROMPT_BATCH = 128  # GPT4All evaluates a prompt in batches of min(n_batch, this) (LLMODEL_MAX_PROMPT_BATCH)


def prompt(
    lm,
    text: bytes,
    params: SamplingParams,
    *,
    n_past: int,
    n_predict: int,
    n_batch: int,
    on_prompt_token: Callable[[int], bool],
    on_response_token: Callable[[int, bytes], bool],
) -> None:
    """Keep the context's first `n_past` tokens, evaluate `text` after them, then sample up to `n_predict`.

    `lm` is a GPT4All object's `.model` (a `LLModel`). Special tokens in `text` are parsed (the chat
    template writes them). A callback returning False stops GPT4All after that token.
    """
    from gpt4all._pyllmodel import PromptCallback, ResponseCallback, llmodel

    lm._set_context(
        n_predict=n_predict,
        top_k=params.top_k if params.top_k > 0 else 1 << 30,
        top_p=params.top_p,
        min_p=params.min_p,
        temp=params.temperature,
        n_batch=n_batch,
        repeat_penalty=params.repeat_penalty,
        repeat_last_n=params.repeat_last_n,
        reset_context=True,
    )
    lm.context.n_past = n_past
    llmodel.llmodel_prompt(
        lm.model,
        ctypes.c_char_p(text),
        # "%1%2", not "%1": with one placeholder GPT4All decodes a "\n\n" assistant suffix after the
        # reply, which calls the prompt callback again (usage off by one) and costs an extra eval.
        ctypes.c_char_p(b"%1%2"),
        PromptCallback(on_prompt_token),
        ResponseCallback(on_response_token),
        True,
        lm.context,
        True,
        ctypes.c_char_p(),
    )


@dataclass
class RawReply:
    prompt_tokens: int
    ids: list[int]
    text: str


def reply(lm, text: str, params: SamplingParams, *, n_batch: int) -> RawReply:
    """A whole evaluation of `text` and GPT4All's reply: the token ids it sampled and their text."""
    prompt_ids: list[int] = []
    ids: list[int] = []
    pieces: list[bytes] = []
    refused: list[str] = []

    def on_response(token_id: int, piece: bytes) -> bool:
        if token_id == -1:
            refused.append(piece.decode("utf-8", "replace"))
            return False
        ids.append(token_id)
        pieces.append(piece)
        return True

    limit = params.max_tokens if params.max_tokens is not None else 1 << 20
    prompt(lm, text.encode("utf-8"), params, n_past=0, n_predict=limit, n_batch=n_batch,
           on_prompt_token=lambda token: prompt_ids.append(token) or True, on_response_token=on_response)
    if refused:
        raise ValueError(f"GPT4All refused the prompt: {refused[0]}")
    return RawReply(len(prompt_ids), ids, b"".join(pieces).decode("utf-8", "replace"))


def load(path: Path, *, n_ctx: int, n_threads: int, device: str):
    """A GPT4All object for `path` (never downloading), or ModelLoadFailed with llama.cpp's own reason."""
    from gpt4all import GPT4All

    check_header(path)
    failure: Exception | None = None
    with _native_stderr() as native_log:
        try:
            return GPT4All(
                path.name,
                model_path=str(path.parent),
                allow_download=False,
                n_threads=n_threads,
                n_ctx=n_ctx,
                device=device,
                verbose=False,
            )
        except Exception as exc:
            failure = exc
    raise ModelLoadFailed(f"could not load {path.name}: {_load_reason(native_log, failure)}") from None


_stderr_lock = threading.Lock()  # fd 2 is process-wide: one capture at a time


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 (and pass it on): llama.cpp says why a load failed only there."""
    captured: list[str] = []
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read()
            if text:
                os.write(2, text)
            captured.append(text.decode("utf-8", "replace"))


def _load_reason(native_log: list[str], failure: Exception) -> str:
    """llama.cpp's own error line (e.g. "unknown pre-tokenizer type: 'smollm'"), else the bindings' message."""
    for line in "".join(native_log).splitlines():
        if "error" in line.lower():
            return line.split("error loading model: ")[-1].strip()
    return str(failure)

"""The GPT4All chat engine: load a `.gguf`, run one fully rendered prompt, count tokens exactly.

It calls `llmodel_prompt` directly (what `LLModel.prompt_model` wraps) so that our own callbacks
count every prompt token and every sampled token: the bindings' decoder swallows tokens that end
mid UTF-8 character, and its prompt callback is a no-op. Special tokens in the prompt are parsed
(`special=True`) because the chat template writes them.

Not thread-safe: one instance belongs to one thread (the scheduler's worker for it).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from errors import ContextLengthExceeded, ModelLoadFailed
from models.interfaces import GenerationOutcome, SamplingParams

GGUF_MAGIC = b"GGUF"


class GPT4AllEngine:
    def __init__(self, path: Path, *, n_ctx: int, n_threads: int, n_batch: int, device: str = "cpu"):
        os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
        from gpt4all import GPT4All

        path = Path(path)
        _check_header(path)
        failure: Exception | None = None
        with _native_stderr() as native_log:
            try:
                model = GPT4All(
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
        if failure is not None:
            raise ModelLoadFailed(f"could not load {path.name}: {_load_reason(native_log, failure)}") from None
        self.name = path.name
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self._llmodel = model.model  # the low-level LLModel
        self._gpt4all = model

    def generate(self, prompt: str, params: SamplingParams, on_text: Callable[[str], bool]) -> GenerationOutcome:
        from gpt4all._pyllmodel import PromptCallback, ResponseCallback, llmodel

        lm = self._llmodel
        counts = {"prompt": 0, "completion": 0}
        state = {"finish": "stop", "limit": None, "overflow": None, "error": None}
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        limit = params.max_tokens

        def on_prompt_token(_token_id: int) -> bool:
            counts["prompt"] += 1
            return True

        def on_response_token(token_id: int, piece: bytes) -> bool:
            if token_id == -1:  # GPT4All reports a prompt over the window this way
                state["overflow"] = piece.decode("utf-8", "replace")
                return False
            if counts["completion"] == 0 and limit is not None and counts["prompt"] + limit > self.n_ctx:
                state["overflow"] = "prompt + max_tokens"
                return False
            counts["completion"] += 1
            try:
                text = decoder.decode(piece)
                keep_going = on_text(text) if text else True
            except BaseException as exc:  # never let an exception unwind through C frames
                state["error"] = exc
                return False
            if counts["prompt"] + counts["completion"] >= self.n_ctx:
                state["finish"], state["limit"] = "length", "context"  # the window is full; GPT4All would shift context
                return False
            return keep_going

        lm._set_context(
            n_predict=limit if limit is not None else self.n_ctx,
            top_k=params.top_k if params.top_k > 0 else 1 << 30,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            n_batch=self.n_batch,
            repeat_penalty=params.repeat_penalty,
            repeat_last_n=params.repeat_last_n,
            reset_context=True,
        )
        llmodel.llmodel_prompt(
            lm.model,
            ctypes.c_char_p(prompt.encode("utf-8")),
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
        if state["error"] is not None:
            raise state["error"]
        if state["overflow"] is not None:
            raise self._overflow(counts["prompt"], limit)
        if limit is not None and counts["completion"] >= limit:
            state["finish"], state["limit"] = "length", "max_tokens"
        return GenerationOutcome(counts["prompt"], counts["completion"], state["finish"], state["limit"])

    def _overflow(self, prompt_tokens: int, limit: int | None) -> ContextLengthExceeded:
        if prompt_tokens == 0:  # refused before evaluation: the prompt alone is too long
            return ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens, and the prompt alone exceeds it. "
                "Shorten the messages or the prompt.",
                param="messages",
            )
        return ContextLengthExceeded(
            f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
            f"{prompt_tokens + limit} tokens ({prompt_tokens} in the prompt, {limit} for the completion). "
            "Reduce the prompt or max_tokens.",
            param="max_tokens",
        )

    def close(self) -> None:
        self._llmodel.close()


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


def _check_header(path: Path) -> None:
    """Refuse files llama.cpp would choke on before handing them to native code."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadFailed(f"could not read {path.name}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadFailed(f"{path.name} is not a GGUF file (it starts with {magic!r})")

"""A `.gguf` loaded once into llama.cpp: its weights (memory-mapped), vocabulary and tokenizer.

The tokenizer is GPT4All's own: `llama_tokenize_gpt4all`, the function GPT4All's prompt call
tokenizes with, so a prompt becomes the very ids GPT4All would evaluate (a BOS where the model wants
one, special tokens parsed, a leading space as SentencePiece expects). Contexts (`llama_context.py`)
are made on a loaded model; all of them share its weights. Safe to read from several threads; the
contexts themselves are not.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from errors import ModelLoadFailed
from models.native import llama_api
from models.native.llama_api import ModelParams

GGUF_MAGIC = b"GGUF"


class LlamaModel:
    def __init__(self, lib: ctypes.CDLL, pointer: int, path: Path):
        self.lib = lib
        self.pointer = ctypes.c_void_p(pointer)
        self.path = path
        self.n_vocab = lib.llama_n_vocab(self.pointer)

    @classmethod
    def load(cls, path: Path, *, backend: str = "kompute", gpu: tuple[int, int] | None = None,
             vocab_only: bool = False) -> "LlamaModel":
        """Load `path` as GPT4All's `LLamaModel::loadModel` does; ModelLoadFailed with llama.cpp's reason.

        `gpu`: (device index, layers to offload) on a GPU build, as GPT4All's loader sets them.
        `vocab_only`: the tokenizer without the weights (no context can be made on it)."""
        check_header(path)
        try:
            lib = llama_api.library(backend)
        except llama_api.LibraryRefused as exc:
            raise ModelLoadFailed(f"could not load {path.name}: the native decode loop refuses GPT4All's library: {exc}") from None
        arch = llama_api.file_arch(lib, path)
        if arch is None:
            raise ModelLoadFailed(f"could not load {path.name}: it names no model architecture")
        if not lib.is_arch_supported(arch.encode()):
            raise ModelLoadFailed(f"could not load {path.name}: GPT4All's llama.cpp does not support the {arch!r} architecture")
        params: ModelParams = lib.llama_model_default_params()
        if gpu is not None:
            params.main_gpu, params.n_gpu_layers, params.split_mode = gpu[0], gpu[1], 0  # LLAMA_SPLIT_MODE_NONE
        params.vocab_only = vocab_only
        llama_api.take_errors()
        pointer = lib.llama_load_model_from_file(str(path).encode(), params)
        if not pointer:
            raise ModelLoadFailed(f"could not load {path.name}: {_reason(llama_api.take_errors())}")
        return cls(lib, pointer, path)

    @property
    def arch(self) -> str:
        return self.lib.llama_model_arch(self.pointer).decode()

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text (llama.cpp's copy of it), or None."""
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self.pointer, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one token takes in a context (F16 keys and values in every layer); 0 if unknown.

        llama.cpp allocates this times N_CTX for every context."""
        def number(key: str) -> int:
            value = self.metadata(f"{self.arch}.{key}")
            return int(value) if value and value.isdigit() else 0

        layers, width, heads = number("block_count"), number("embedding_length"), number("attention.head_count")
        if not (layers and width and heads):
            return 0
        kv_heads = number("attention.head_count_kv") or heads
        key_width = (number("attention.key_length") or width // heads) * kv_heads
        value_width = (number("attention.value_length") or width // heads) * kv_heads
        return layers * (key_width + value_width) * 2

    def tokenize(self, text: bytes, *, at_start: bool = True, insert_space: bool = True, special: bool = True) -> list[int]:
        """GPT4All's `tokenize`: a BOS (where the model wants one) only at the start; special tokens parsed
        (with `special` False, `<|im_end|>` is plain text, as inside generated JSON).

        ValueError for text that is not UTF-8: llama.cpp throws a C++ exception on it, which aborts the process."""
        text.decode("utf-8")  # a UnicodeDecodeError is a ValueError
        capacity = len(text) + 8
        while True:
            out = (ctypes.c_int32 * capacity)()
            n = self.lib.llama_tokenize_gpt4all(self.pointer, text, len(text), out, capacity, at_start, special, insert_space)
            if n >= 0:
                return list(out[:n])
            capacity = -n

    def piece(self, token: int, *, special: bool = True) -> bytes:
        """The token's bytes: control tokens as their text (what GPT4All prints) or, `special=False`, as nothing."""
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_token_to_piece(self.pointer, token, buf, 256, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.pointer, token, buf, -n, 0, special)
        return buf.raw[: max(n, 0)]

    def ends_generation(self, token: int) -> bool:
        """An end-of-generation token (EOS, or EOT and the like): the reply is over."""
        return bool(self.lib.llama_token_is_eog(self.pointer, token))

    def raw_pieces(self) -> list[bytes]:
        """Every token's bytes as the model writes them (`special=False`): control tokens come out empty.

        What a constraint's vocabulary is built from (models/native/vocabulary.py): no grammar can
        ever allow `<|im_start|>` and the like."""
        return [self.piece(token, special=False) for token in range(self.n_vocab)]

    def end_of_generation(self) -> tuple[int, ...]:
        """The ids that end a generation: EOS, EOT and any other `llama_token_is_eog` token."""
        return tuple(token for token in range(self.n_vocab) if self.ends_generation(token))

    def close(self) -> None:
        if self.pointer:
            self.lib.llama_free_model(self.pointer)
            self.pointer = ctypes.c_void_p()


def check_header(path: Path) -> None:
    """Refuse files llama.cpp would choke on before handing them to native code."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadFailed(f"could not read {path.name}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadFailed(f"{path.name} is not a GGUF file (it starts with {magic!r})")


def _reason(errors: list[str]) -> str:
    """llama.cpp's own error line (e.g. "unknown pre-tokenizer type: 'smollm'")."""
    for line in errors:
        if "error loading model" in line:
            return line.split("error loading model: ")[-1].strip()
    return errors[-1] if errors else "llama.cpp refused the file"

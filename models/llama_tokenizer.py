"""llama.cpp's own tokenizer, from the very library GPT4All loaded, for exact prefix reuse.

GPT4All 2.8.2 exports no tokenizer, but the llama.cpp build it loads (`libllamamodel-mainline-*`)
exports `llama_tokenize_gpt4all`, the function GPT4All's own prompt call tokenizes with. Loading the
model file with `vocab_only` gives a tokenizer that is GPT4All's to the bit: same code, same
vocabulary, same special-token parsing. The engine still checks it on every full evaluation (the
token ids GPT4All evaluated must equal ours) and turns reuse off if they ever differ.

Linux only: the library is found in /proc/self/maps after GPT4All has loaded it. Elsewhere
`load()` returns None and prompts are evaluated in full, as before.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

log = logging.getLogger("models.tokenizer")

# llama.cpp's token attributes (llama.h, enum llama_token_attr): GPT4All treats these as special.
_ATTR_UNKNOWN, _ATTR_CONTROL, _ATTR_USER_DEFINED = 1 << 0, 1 << 3, 1 << 4
_SPECIAL = _ATTR_UNKNOWN | _ATTR_CONTROL | _ATTR_USER_DEFINED


class _ModelParams(ctypes.Structure):
    """`struct llama_model_params` of the llama.cpp that gpt4all 2.8.2 bundles (commit 443665a)."""

    _fields_ = [
        ("n_gpu_layers", ctypes.c_int32),
        ("split_mode", ctypes.c_int32),
        ("main_gpu", ctypes.c_int32),
        ("tensor_split", ctypes.c_void_p),
        ("rpc_servers", ctypes.c_char_p),
        ("progress_callback", ctypes.c_void_p),
        ("progress_callback_user_data", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("vocab_only", ctypes.c_bool),
        ("use_mmap", ctypes.c_bool),
        ("use_mlock", ctypes.c_bool),
        ("check_tensors", ctypes.c_bool),
    ]


class LlamaTokenizer:
    """Tokenize and inspect tokens exactly as GPT4All's prompt call does. Thread-safe (read-only vocab)."""

    def __init__(self, lib: ctypes.CDLL, model_ptr: int):
        self._lib = lib
        self._model = ctypes.c_void_p(model_ptr)
        self._special: dict[int, bool] = {}
        self._lock = threading.Lock()

    def tokenize(self, text: bytes, *, at_start: bool, insert_space: bool, special: bool = True) -> list[int]:
        """GPT4All's `tokenize`: BOS (where the model wants one) only at the start, special tokens parsed
        (with `special` False, `<|im_end|>` is plain text, as inside generated JSON).

        ValueError for text that is not UTF-8: llama.cpp throws a C++ exception on it, which aborts the process."""
        text.decode("utf-8")  # a UnicodeDecodeError is a ValueError
        capacity = len(text) + 8
        while True:
            out = (ctypes.c_int32 * capacity)()
            n = self._lib.llama_tokenize_gpt4all(self._model, text, len(text), out, capacity, at_start, special, insert_space)
            if n >= 0:
                return list(out[:n])
            capacity = -n

    def is_special(self, token: int) -> bool:
        """What GPT4All's `isSpecialToken` says: control, user-defined or unknown."""
        with self._lock:
            if token not in self._special:
                self._special[token] = bool(self._lib.llama_token_get_attr(self._model, token) & _SPECIAL)
            return self._special[token]

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._model, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)]

    def raw_pieces(self) -> list[bytes]:
        """Every token's bytes as the model writes them (`special=False`): control tokens come out empty.

        What a constraint's vocabulary is built from (models/native/vocabulary.py): byte-level BPE
        pieces are already decoded to raw bytes, and `<|im_start|>` and the like are b"", so no
        grammar can ever allow them."""
        n_vocab = self._lib.llama_n_vocab(self._model)
        pieces = []
        buf = ctypes.create_string_buffer(256)
        for token in range(n_vocab):
            n = self._lib.llama_token_to_piece(self._model, token, buf, len(buf), 0, False)
            if n < 0:  # longer than the buffer: llama.cpp says how long
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._model, token, buf, len(buf), 0, False)
            pieces.append(buf.raw[: max(n, 0)])
        return pieces

    def end_of_generation(self) -> tuple[int, ...]:
        """The ids that end a generation: EOS, and EOT where the model has one (llama.cpp's `llama_token_is_eog`)."""
        ids = (self._lib.llama_token_eos(self._model), self._lib.llama_token_eot(self._model))
        return tuple(dict.fromkeys(i for i in ids if i >= 0))

    def close(self) -> None:
        if self._model:
            self._lib.llama_free_model(self._model)
            self._model = ctypes.c_void_p()


def load(path: Path) -> LlamaTokenizer | None:
    """A vocab-only llama.cpp model of `path`, from the library GPT4All loaded; None where that is not possible."""
    lib = _loaded_llama_library()
    if lib is None:
        return None
    try:
        lib.llama_model_default_params.restype = _ModelParams
        lib.llama_load_model_from_file.argtypes = [ctypes.c_char_p, _ModelParams]
        lib.llama_load_model_from_file.restype = ctypes.c_void_p
        lib.llama_tokenize_gpt4all.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32,
            ctypes.c_bool, ctypes.c_bool, ctypes.c_bool,
        ]
        lib.llama_tokenize_gpt4all.restype = ctypes.c_int32
        lib.llama_token_get_attr.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.llama_token_get_attr.restype = ctypes.c_int32
        lib.llama_token_to_piece.argtypes = [
            ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_bool,
        ]
        lib.llama_token_to_piece.restype = ctypes.c_int32
        lib.llama_free_model.argtypes = [ctypes.c_void_p]
        for name in ("llama_n_vocab", "llama_token_eos", "llama_token_eot"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_int32
        params = lib.llama_model_default_params()
        if not params.use_mmap or params.vocab_only:  # not the layout we know: do not guess
            log.warning("llama.cpp's model parameters are not laid out as expected; prefix reuse is off")
            return None
        params.vocab_only = True
        model = lib.llama_load_model_from_file(str(path).encode(), params)
    except (AttributeError, OSError) as exc:
        log.warning("llama.cpp's tokenizer is not reachable (%s); prefix reuse is off", exc)
        return None
    if not model:
        return None
    return LlamaTokenizer(lib, model)


def _loaded_llama_library() -> ctypes.CDLL | None:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if "libllamamodel-mainline" in Path(path).name:
            return ctypes.CDLL(path)  # already loaded: dlopen hands back the same handle
    return None

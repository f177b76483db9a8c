"""The llama.cpp library GPT4All ships: which build, its C API through ctypes, and the layout check.

**Which build.** GPT4All's loader (`LLModel::Implementation::construct` in gpt4all-backend/llmodel.cpp,
tag python-v2.8.2) takes `libllamamodel-mainline-<backend>.so` from its package's build folder, with
`-avxonly` appended on a CPU without AVX2; its Python bindings map `device="cpu"` to the `kompute`
build with no GPU device (Linux ships no separate CPU build), `cuda` to the CUDA build. `library()`
applies the same rule and checks the choice with the library's own `get_build_variant()`.

**The layout.** The structs below are llama.h's at nomic-ai/llama.cpp 443665a (the submodule GPT4All
2.8.2 bundles); a wrong field is a segfault, not an exception. `check_layout` compares their sizes
with what that header gives on x86-64 and `llama_context_default_params()` / `llama_model_default_params()`
with that commit's defaults; any mismatch refuses the library (LibraryRefused) before a model is loaded.

llama.cpp's own log goes through `_on_log`: errors are kept (a failed load's reason is only said
there) and nothing is printed unless GPT4ALL_VERBOSE_LLAMACPP is set, as GPT4All does.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from functools import lru_cache
from pathlib import Path

c_bool, c_char_p, c_float, c_int8, c_int32, c_uint32, c_size_t, c_void_p = (
    ctypes.c_bool, ctypes.c_char_p, ctypes.c_float, ctypes.c_int8, ctypes.c_int32, ctypes.c_uint32, ctypes.c_size_t,
    ctypes.c_void_p,
)
P = ctypes.POINTER
GGML_TYPE_F16 = 1
LLAMA_DEFAULT_SEED = 0xFFFFFFFF
LOG_LEVEL_ERROR = 2


class LibraryRefused(RuntimeError):
    """The library cannot be driven safely here (not found, or not the layout this module declares)."""


class ModelParams(ctypes.Structure):
    _fields_ = [
        ("n_gpu_layers", c_int32), ("split_mode", c_int32), ("main_gpu", c_int32),
        ("tensor_split", c_void_p), ("rpc_servers", c_char_p), ("progress_callback", c_void_p),
        ("progress_callback_user_data", c_void_p), ("kv_overrides", c_void_p),
        ("vocab_only", c_bool), ("use_mmap", c_bool), ("use_mlock", c_bool), ("check_tensors", c_bool),
    ]


class ContextParams(ctypes.Structure):
    _fields_ = [
        ("seed", c_uint32), ("n_ctx", c_uint32), ("n_batch", c_uint32), ("n_ubatch", c_uint32),
        ("n_seq_max", c_uint32), ("n_threads", c_uint32), ("n_threads_batch", c_uint32),
        ("rope_scaling_type", c_int32), ("pooling_type", c_int32), ("attention_type", c_int32),
        ("rope_freq_base", c_float), ("rope_freq_scale", c_float), ("yarn_ext_factor", c_float),
        ("yarn_attn_factor", c_float), ("yarn_beta_fast", c_float), ("yarn_beta_slow", c_float),
        ("yarn_orig_ctx", c_uint32), ("defrag_thold", c_float),
        ("cb_eval", c_void_p), ("cb_eval_user_data", c_void_p),
        ("type_k", c_int32), ("type_v", c_int32),
        ("logits_all", c_bool), ("embeddings", c_bool), ("offload_kqv", c_bool), ("flash_attn", c_bool),
        ("abort_callback", c_void_p), ("abort_callback_data", c_void_p),
    ]


class Batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", c_int32), ("token", P(c_int32)), ("embd", P(c_float)), ("pos", P(c_int32)),
        ("n_seq_id", P(c_int32)), ("seq_id", P(P(c_int32))), ("logits", P(c_int8)),
        ("all_pos_0", c_int32), ("all_pos_1", c_int32), ("all_seq_id", c_int32),
    ]


class TokenData(ctypes.Structure):
    _fields_ = [("id", c_int32), ("logit", c_float), ("p", c_float)]


class TokenDataArray(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("size", c_size_t), ("sorted", c_bool)]


# sizes on x86-64 from llama.h at 443665a (DESIGN.md "Native decode")
EXPECTED_SIZES = {ModelParams: 64, ContextParams: 120, Batch: 72, TokenData: 12, TokenDataArray: 24}
_CTX = c_void_p
_MODEL = c_void_p
_CANDIDATES = P(TokenDataArray)
SIGNATURES: dict[str, tuple[object, list]] = {
    "llama_model_default_params": (ModelParams, []),
    "llama_context_default_params": (ContextParams, []),
    "llama_load_model_from_file": (_MODEL, [c_char_p, ModelParams]),
    "llama_free_model": (None, [_MODEL]),
    "llama_new_context_with_model": (_CTX, [_MODEL, ContextParams]),
    "llama_free": (None, [_CTX]),
    "llama_n_vocab": (c_int32, [_MODEL]),
    "llama_n_ctx": (c_uint32, [_CTX]),
    "llama_model_arch": (c_char_p, [_MODEL]),
    "llama_model_meta_val_str": (c_int32, [_MODEL, c_char_p, c_char_p, c_size_t]),
    "llama_batch_init": (Batch, [c_int32, c_int32, c_int32]),
    "llama_batch_free": (None, [Batch]),
    "llama_decode": (c_int32, [_CTX, Batch]),
    "llama_get_logits_ith": (P(c_float), [_CTX, c_int32]),
    "llama_kv_cache_seq_rm": (c_bool, [_CTX, c_int32, c_int32, c_int32]),
    "llama_kv_cache_clear": (None, [_CTX]),
    "llama_state_seq_get_size": (c_size_t, [_CTX, c_int32]),
    "llama_state_seq_get_data": (c_size_t, [_CTX, P(ctypes.c_uint8), c_int32]),
    "llama_state_seq_set_data": (c_size_t, [_CTX, P(ctypes.c_uint8), c_int32]),
    "llama_state_get_size": (c_size_t, [_CTX]),
    "llama_state_get_data": (c_size_t, [_CTX, P(ctypes.c_uint8)]),
    "llama_tokenize_gpt4all": (c_int32, [_MODEL, c_char_p, c_int32, P(c_int32), c_int32, c_bool, c_bool, c_bool]),
    "llama_token_to_piece": (c_int32, [_MODEL, c_int32, c_char_p, c_int32, c_int32, c_bool]),
    "llama_token_is_eog": (c_bool, [_MODEL, c_int32]),
    "llama_set_rng_seed": (None, [_CTX, c_uint32]),
    "llama_sample_repetition_penalties": (None, [_CTX, _CANDIDATES, P(c_int32), c_size_t, c_float, c_float, c_float]),
    "llama_sample_token_greedy": (c_int32, [_CTX, _CANDIDATES]),
    "llama_sample_top_k": (None, [_CTX, _CANDIDATES, c_int32, c_size_t]),
    "llama_sample_tail_free": (None, [_CTX, _CANDIDATES, c_float, c_size_t]),
    "llama_sample_typical": (None, [_CTX, _CANDIDATES, c_float, c_size_t]),
    "llama_sample_top_p": (None, [_CTX, _CANDIDATES, c_float, c_size_t]),
    "llama_sample_min_p": (None, [_CTX, _CANDIDATES, c_float, c_size_t]),
    "llama_sample_temp": (None, [_CTX, _CANDIDATES, c_float]),
    "llama_sample_token": (c_int32, [_CTX, _CANDIDATES]),
    "llama_log_set": (None, [c_void_p, c_void_p]),
    "get_build_variant": (c_char_p, []),
    "get_file_arch": (c_void_p, [c_char_p]),
    "is_arch_supported": (c_bool, [c_char_p]),
}

LOG_CALLBACK = ctypes.CFUNCTYPE(None, c_int32, c_char_p, c_void_p)
_log_lock = threading.Lock()
_errors: list[str] = []  # llama.cpp's error lines since the last `take_errors()`


@LOG_CALLBACK
def _on_log(level: int, text: bytes, _user: int) -> None:
    line = (text or b"").decode("utf-8", "replace")
    if level <= LOG_LEVEL_ERROR:
        with _log_lock:
            _errors.append(line.strip())
            del _errors[:-32]
    if level <= LOG_LEVEL_ERROR or os.environ.get("GPT4ALL_VERBOSE_LLAMACPP"):  # as GPT4All's own callback
        sys.stderr.write(line)


def take_errors() -> list[str]:
    with _log_lock:
        taken = list(_errors)
        _errors.clear()
    return taken


def build_folder() -> Path:
    """GPT4All's folder of native libraries, found without importing gpt4all (which loads them all)."""
    spec = importlib.util.find_spec("gpt4all")
    if spec is None or not spec.submodule_search_locations:
        raise LibraryRefused("the gpt4all package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "llmodel_DO_NOT_MODIFY" / "build"


def cpu_has_avx2() -> bool:
    try:
        return any(" avx2" in line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except OSError:
        return True


def build_variant(backend: str) -> str:
    """GPT4All's `applyCPUVariant`: `-avxonly` on a CPU without AVX2."""
    return backend if cpu_has_avx2() else f"{backend}-avxonly"


@lru_cache(maxsize=4)
def library(backend: str = "kompute") -> ctypes.CDLL:
    """The build GPT4All's loader picks for `backend` on this CPU, declared and checked (LibraryRefused otherwise)."""
    variant = build_variant(backend)
    path = build_folder() / f"libllamamodel-mainline-{variant}.so"
    if not path.is_file():
        raise LibraryRefused(f"GPT4All ships no {path.name} here (looked in {path.parent})")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise LibraryRefused(f"could not load {path.name}: {exc}") from None
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise LibraryRefused(f"{path.name} does not export {name}") from None
        function.restype, function.argtypes = restype, argtypes
    if lib.get_build_variant().decode() != variant:
        raise LibraryRefused(f"{path.name} says it is the {lib.get_build_variant().decode()!r} build, not {variant!r}")
    check_layout(lib)
    lib.llama_log_set(ctypes.cast(_on_log, c_void_p), None)
    return lib


def check_layout(lib: ctypes.CDLL) -> None:
    """Refuse the library unless our structs have llama.h's sizes and the defaults are that commit's."""
    for struct, size in EXPECTED_SIZES.items():
        if ctypes.sizeof(struct) != size:
            raise LibraryRefused(f"struct {struct.__name__} is {ctypes.sizeof(struct)} bytes here, llama.h says {size}")
    ctx = lib.llama_context_default_params()
    expected_ctx = {"seed": LLAMA_DEFAULT_SEED, "n_ctx": 512, "n_batch": 2048, "n_ubatch": 512, "n_seq_max": 1,
                    "type_k": GGML_TYPE_F16, "type_v": GGML_TYPE_F16, "logits_all": False, "embeddings": False,
                    "offload_kqv": True, "flash_attn": False, "yarn_ext_factor": -1.0, "yarn_beta_fast": 32.0,
                    "defrag_thold": -1.0, "abort_callback": None}
    model = lib.llama_model_default_params()
    expected_model = {"n_gpu_layers": 0, "main_gpu": 0, "vocab_only": False, "use_mmap": True, "use_mlock": False,
                      "check_tensors": False, "kv_overrides": None}
    for params, expected in ((ctx, expected_ctx), (model, expected_model)):
        wrong = {name: getattr(params, name) for name, value in expected.items() if getattr(params, name) != value}
        if wrong:
            raise LibraryRefused(f"llama.cpp's default {type(params).__name__} are not the layout declared here: {wrong}")


def file_arch(lib: ctypes.CDLL, path: Path) -> str | None:
    """The model file's architecture as GPT4All reads it (`get_file_arch`); None if it has none."""
    raw = lib.get_file_arch(str(path).encode())
    if not raw:
        return None
    arch = ctypes.string_at(raw).decode("utf-8", "replace")
    ctypes.CDLL(None).free(ctypes.c_void_p(raw))  # strdup'd by the library
    return arch

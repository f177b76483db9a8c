"""EMBEDDING_DTYPE: which dtype `auto` picks on which CPU, and what a forced choice says (no torch loaded).

The real conversion and its accuracy are in tests/integration/test_embedding_engine.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.embedding_precision import choose_dtype, min_cosine, native_bf16
from settings import Settings, SettingsError

AVX2_ONLY = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}  # this project's EPYC
AVX512_NO_BF16 = {**AVX2_ONLY, "avx512_f": True}  # Skylake-SP: oneDNN runs bf16 there, but emulated
ZEN4 = {**AVX512_NO_BF16, "avx512_bf16": True}
SAPPHIRE_RAPIDS = {**ZEN4, "amx_bf16": True}


@pytest.mark.parametrize("capabilities, onednn, dtype", [
    (AVX2_ONLY, False, "float32"),
    (AVX512_NO_BF16, True, "float32"),
    (ZEN4, True, "bfloat16"),
    (SAPPHIRE_RAPIDS, True, "bfloat16"),
    (ZEN4, False, "float32"),  # a torch built without oneDNN's bf16 kernels
])
def test_auto_picks_bfloat16_only_where_the_cpu_computes_it_natively(capabilities, onednn, dtype):
    choice = choose_dtype("auto", "cpu", capabilities, onednn)
    assert choice.dtype == dtype
    assert choice.reason.startswith("auto: ")
    if dtype == "bfloat16":
        assert native_bf16(capabilities, onednn) in choice.reason
    else:
        assert "emulated" in choice.reason


def test_float32_and_bfloat16_are_honoured_whatever_the_cpu():
    assert choose_dtype("float32", "cpu", SAPPHIRE_RAPIDS, True).dtype == "float32"
    forced = choose_dtype("bfloat16", "cpu", AVX2_ONLY, False)
    assert forced.dtype == "bfloat16" and "emulated" in forced.reason and "slower" in forced.reason
    assert "native (avx512_bf16)" in choose_dtype("bfloat16", "cpu", ZEN4, True).reason


def test_auto_judges_cpus_only():
    assert choose_dtype("auto", "cuda", SAPPHIRE_RAPIDS, True).dtype == "float32"
    assert choose_dtype("bfloat16", "mps", AVX2_ONLY, False).dtype == "bfloat16"


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="EMBEDDING_DTYPE"):
        choose_dtype("float16", "cpu", ZEN4, True)


def test_the_setting_is_typed_and_defaults_to_auto():
    assert Settings.from_env({}).embedding_dtype == "auto"
    assert Settings.from_env({"EMBEDDING_DTYPE": "bfloat16"}).embedding_dtype == "bfloat16"
    with pytest.raises(SettingsError, match="EMBEDDING_DTYPE"):
        Settings.from_env({"EMBEDDING_DTYPE": "fp16"})


def test_min_cosine_is_the_worst_row():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert min_cosine(reference, reference * 3) == pytest.approx(1.0)
    assert min_cosine(reference, np.array([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx(np.sqrt(0.5))

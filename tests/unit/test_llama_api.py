"""The native library: the build GPT4All's loader would pick, and the refusal of a layout we do not know."""

from __future__ import annotations

import ctypes

import pytest

from models.native import llama_api
from models.native.llama_api import LibraryRefused


def test_the_cpu_build_is_kompute_or_its_avx_only_variant_as_gpt4alls_loader_picks(monkeypatch):
    monkeypatch.setattr(llama_api, "cpu_has_avx2", lambda: True)
    assert llama_api.build_variant("kompute") == "kompute"
    monkeypatch.setattr(llama_api, "cpu_has_avx2", lambda: False)
    assert llama_api.build_variant("cuda") == "cuda-avxonly"


def test_the_library_loads_and_says_which_build_it_is():
    lib = llama_api.library("kompute")
    assert lib.get_build_variant().decode() == llama_api.build_variant("kompute")


def test_a_struct_of_another_size_refuses_the_library(monkeypatch):
    lib = llama_api.library("kompute")
    llama_api.check_layout(lib)  # the declared layout is the library's
    monkeypatch.setitem(llama_api.EXPECTED_SIZES, llama_api.Batch, ctypes.sizeof(llama_api.Batch) + 8)
    with pytest.raises(LibraryRefused, match="Batch"):
        llama_api.check_layout(lib)


def test_defaults_that_are_not_that_commits_refuse_the_library(monkeypatch):
    lib = llama_api.library("kompute")

    class Shifted:  # what a misdeclared struct reads: the right bytes at the wrong offsets
        def __getattr__(self, name):
            return 7

    monkeypatch.setattr(lib, "llama_context_default_params", lambda: Shifted())
    with pytest.raises(LibraryRefused, match="ContextParams|default"):
        llama_api.check_layout(lib)


def test_a_build_gpt4all_does_not_ship_is_refused_by_name():
    with pytest.raises(LibraryRefused, match="libllamamodel-mainline-metal"):
        llama_api.library("metal")

"""The real engine: it names the limit a reply reached (the chat page's cut-short notice shows it), and
refuses a device it cannot use rather than run elsewhere."""

from __future__ import annotations

import pytest

from errors import ModelLoadFailed
from models.interfaces import SamplingParams
from models.llama_engine import LlamaEngine
from models.registry import ModelRegistry
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def engine():
    engine = LlamaEngine(ModelRegistry(ROOT / "models").default().path, n_ctx=128, n_threads=2, n_batch=128)
    yield engine
    engine.close()


def test_max_tokens_and_a_full_window_are_told_apart(engine):
    prompt = "<|im_start|>user\nWrite a very long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"
    short = engine.generate(prompt, SamplingParams(max_tokens=3, temperature=0.0), lambda *_: True)
    assert (short.finish_reason, short.limit, short.completion_tokens) == ("length", "max_tokens", 3)
    full = engine.generate(prompt, SamplingParams(max_tokens=None, temperature=0.0), lambda *_: True)
    assert (full.finish_reason, full.limit) == ("length", "context")
    assert full.prompt_tokens + full.completion_tokens == 128


@pytest.mark.parametrize("device", ["gpu", "cuda", "nvidia"])
def test_a_gpu_device_without_a_gpu_is_refused_at_load_never_run_on_the_cpu(device):
    # this machine has no GPU: GPT4All lists none, so every GPU device is a load error that says so
    with pytest.raises(ModelLoadFailed, match=rf"DEVICE={device}: GPT4All finds no matching .* GPU"):
        LlamaEngine(ModelRegistry(ROOT / "models").default().path, n_ctx=128, n_threads=2, n_batch=32, device=device)

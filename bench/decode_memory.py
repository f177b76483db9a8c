"""The decode loop's memory per context, measured in a fresh process (bench/decode.py runs this twice).

    python -m bench.decode_memory ours|gpt4all [--n-ctx 2048] [--threads 2]

- `ours`: the model loaded once by `LlamaEngine` with `PrefixCache(slots=4)`; the process's USS and
  RSS after a first conversation (one context), then after three more conversations, each with its
  own system prompt, so that each takes a context of its own (four contexts).
- `gpt4all`: the same with GPT4All instances, one per conversation, as the server kept one per
  cached context before the native loop (the raw baseline: about 70 MB each at N_CTX 2048).

Each conversation is one short turn (a system prompt of its own, a question, 8 greedy reply tokens):
llama.cpp clears a context's whole KV cache when it makes it, so the cache is in the process's
memory at once, however little of it a conversation fills. Prints one JSON line.
A process of its own, so that nothing else a benchmark allocated (or freed) counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/decode_memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.common import ROOT
from bench.multiturn_conversations import PERSONAS, question
from models.interfaces import PrefixCache, SamplingParams
from models.registry import ModelRegistry, kv_bytes_per_token

CONTEXTS = 4
N_BATCH = 128
MB = 2**20


def _memory() -> tuple[float, float]:
    """(USS, RSS) of this process in MB."""
    info = psutil.Process().memory_full_info()
    return info.uss / MB, info.rss / MB


def _prompt(chat_format, k: int) -> str:
    opening, assistant, shop, _ = PERSONAS[k]
    system = f"{opening} You are {assistant}, the assistant of {shop}, a bicycle shop."
    return chat_format.render([{"role": "system", "content": system}, {"role": "user", "content": question(k, 0)}])


def ours(path: Path, chat_format, n_ctx: int, threads: int) -> dict:
    from models.llama_engine import LlamaEngine

    params = SamplingParams(max_tokens=8, temperature=0)
    engine = LlamaEngine(path, n_ctx=n_ctx, n_threads=threads, n_batch=N_BATCH, prefix_cache=PrefixCache(slots=CONTEXTS))
    loaded = _memory()
    engine.generate(_prompt(chat_format, 0), params, lambda *_: True, scope="bench")
    one = _memory()
    for k in range(1, CONTEXTS):
        engine.generate(_prompt(chat_format, k), params, lambda *_: True, scope="bench")
    return {"loaded": loaded, "one": one, "many": _memory(), "contexts": len(engine.contexts)}


def gpt4all(path: Path, chat_format, n_ctx: int, threads: int) -> dict:
    from models import gpt4all_native

    params = SamplingParams(max_tokens=8, temperature=0)
    instances = [gpt4all_native.load(path, n_ctx=n_ctx, n_threads=threads, device="cpu")]
    loaded = _memory()
    gpt4all_native.reply(instances[0].model, _prompt(chat_format, 0), params, n_batch=N_BATCH)
    one = _memory()
    for k in range(1, CONTEXTS):
        instances.append(gpt4all_native.load(path, n_ctx=n_ctx, n_threads=threads, device="cpu"))
        gpt4all_native.reply(instances[-1].model, _prompt(chat_format, k), params, n_batch=N_BATCH)
    return {"loaded": loaded, "one": one, "many": _memory(), "contexts": len(instances)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=("ours", "gpt4all"))
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="")
    args = parser.parse_args(argv)
    os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
    registry = ModelRegistry(args.models_dir, args.model)
    model = registry.default()
    started = _memory()
    measure = ours if args.system == "ours" else gpt4all
    found = measure(model.path, registry.chat_format(model), args.n_ctx, args.threads)
    (one_uss, one_rss), (many_uss, many_rss), added = found["one"], found["many"], found["contexts"] - 1
    print(json.dumps({
        "system": args.system, "n_ctx": args.n_ctx, "contexts": found["contexts"],
        "start_uss_mb": started[0], "loaded_uss_mb": found["loaded"][0], "loaded_rss_mb": found["loaded"][1],
        "one_uss_mb": one_uss, "one_rss_mb": one_rss, "many_uss_mb": many_uss, "many_rss_mb": many_rss,
        "per_context_uss_mb": (many_uss - one_uss) / added if added else None,
        "per_context_rss_mb": (many_rss - one_rss) / added if added else None,
        "kv_mb": kv_bytes_per_token(model.path) * args.n_ctx / MB,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The decode loop's memory per context, measured in a fresh process (bench/decode.py runs this twice).

    python -m bench.decode_memory ours|gpt4all [--n-ctx 2048] [--threads 2]

- `ours`: the model loaded once by `LlamaEngine` with `PrefixCache(slots=4)`; the process's USS and
  RSS after a first conversation (one context), then after three more conversations, each with its
  own system prompt, so that each takes a context of its own (four contexts).
- `gpt4all`: the same with GPT4All instances, one per conversation, as the server kept one per
  cached context before the native loop (the raw baseline: about 70 MB each at N_CTX 2048).

Three figures: RSS; USS (pages no other mapping shares); and anonymous memory (smaps_rollup's
`Anonymous`: heap, KV caches, work buffers, not the weights' file mapping). The increment per
context is read on anonymous memory: USS moves with the weights' pages, which stop being "unique"
as soon as anything else maps the same file: another process (a server running the same model), or
a second GPT4All instance in this one (measured: a GPT4All instance then seemed to add 37 MB of
USS instead of its 72 MB, the weights' pages moving from unique to shared).

Each conversation is one short turn in ChatML (a system prompt of its own, a question, 8 greedy
reply tokens; the model's own template is not read, since parsing the GGUF's metadata takes seconds):
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
from bench.decode_report import N_BATCH, N_CTX
from bench.multiturn_conversations import PERSONAS, question
from models.interfaces import PrefixCache, SamplingParams
from models.chat_template import FALLBACK_CHATML, ChatFormat
from models.registry import ModelRegistry

CONTEXTS = 4
MB = 2**20


def _memory() -> dict[str, float]:
    """This process's USS, RSS and anonymous memory, in MB."""
    info = psutil.Process().memory_full_info()
    anonymous = 0.0
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                anonymous = int(line.split()[1]) * 1024 / MB
    return {"uss": info.uss / MB, "rss": info.rss / MB, "anon": anonymous}


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
    parser.add_argument("--n-ctx", type=int, default=N_CTX)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="")
    args = parser.parse_args(argv)
    os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
    model = ModelRegistry(args.models_dir, args.model).default()
    started = _memory()
    measure = ours if args.system == "ours" else gpt4all
    found = measure(model.path, ChatFormat(FALLBACK_CHATML, from_file=False), args.n_ctx, args.threads)
    one, many, added = found["one"], found["many"], found["contexts"] - 1
    result = {"system": args.system, "n_ctx": args.n_ctx, "contexts": found["contexts"]}
    for kind in ("uss", "rss", "anon"):
        result.update({f"start_{kind}_mb": started[kind], f"loaded_{kind}_mb": found["loaded"][kind],
                       f"one_{kind}_mb": one[kind], f"many_{kind}_mb": many[kind],
                       f"per_context_{kind}_mb": (many[kind] - one[kind]) / added if added else None})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

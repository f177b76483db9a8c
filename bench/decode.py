"""Decode-loop benchmark: our decode loop against GPT4All's own prompt call, and what each feature costs.

    python bench/decode.py [--quick] [--runs N] [--threads N] [--decode-tokens N] [--decode-skip-memory]

In this process, on the default model, with `--threads` (N_THREADS, else all cores: 2 here),
`n_batch` 128, N_CTX 2048, greedy, the prefix cache off (every prompt evaluated in full, as the raw
call does):
- decode: raw GPT4All's prompt call (models/gpt4all_native.py `prompt`, the baseline) against our
  loop (models/llama_engine.py `LlamaEngine.generate`) unconstrained, on the same chat prompt and
  `--decode-tokens` (default 128); the token ids must be identical, and whether they are is printed
  (goal: ratio >= 0.95);
- structured output: our loop with a JSON-schema constraint (a person: strings, an integer, an
  enum, an array of at most 3, a nested object, a number, a nullable) against the same prompt unconstrained for
  as many tokens as the constrained reply took (goal: ratio >= 0.9); and the setup of a new schema
  (the API's check, the compile, a matcher) against a cached one, and the vocabulary's setup (once
  per model);
- a tool call: `tool_choice: "required"` in the generic format (SmolLM2's template teaches none), as
  models/chat_plan.py `plan_chat` plans it (the tools described in the prompt, the constraint from
  models/tool_constraint.py), against the same prompt unconstrained for as many tokens; the reply
  must parse into a call;
- logprobs: `top_logprobs` 5 against off, on the decode prompt (the same token ids);
- the mask's own costs (bench/decode_masks.py): µs per token along a valid output, compile ms per
  schema, with xgrammar for comparison when it is installed;
- memory (bench/decode_memory.py, each system in a fresh process): anonymous memory, USS and RSS
  with 1 context and with 4 (`PrefixCache(slots=4)`, four conversations), the cost of each further
  context (on anonymous memory; that module says why) against `LlamaModel.kv_bytes_per_token() * n_ctx`
  (models/registry.py), and the same for GPT4All instances, one per conversation, as the server
  kept them before the native loop.

Tokens/s is over the decode phase: (tokens - 1) / (last token's time - first token's time), so
prompt evaluation is not in it; each figure is the median over `--runs` (default 5; quick 2).

Bias control: a warm-up pass first (it also fixes each constrained case's token count, greedy being
deterministic, and compiles its schema, so the measured runs use the cache as a client sending the
same schema does). Then each run makes every measured call once, in an order that rotates from run
to run, so that drift in machine load weighs on all alike; each ratio is of medians over the same
runs. Memory is measured in new processes, so that nothing else this benchmark allocated counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # `python bench/decode.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import decode_masks
from bench.common import ROOT, benchmark_main, busy_machine_warning, engine_threads, load_average, median, publish
from bench.decode_report import GOALS, N_BATCH, N_CTX, NAME, print_report, rows_of
from bench.generation_requests import PROMPTS, SYSTEM_MESSAGE
from models import gpt4all_native
from models.chat_plan import plan_chat
from models.conversation import CallStart, Conversation, FunctionTool, Message, ToolChoice
from models.interfaces import Constraint, SamplingParams
from models.llama_engine import LlamaEngine
from models.native.constraint import check_schema, compile
from models.registry import ModelRegistry
from models.tool_constraint import schema_text

JSON_REQUEST = ("Invent a person and describe them as a JSON object: name, age, email, favourite colour, a few tags, "
                "address, height in metres and nickname.")
TOOL_QUESTION = "What is the weather like in Paris right now, in Celsius?"
TOOLS = (
    FunctionTool("get_weather", "The current weather in a city.", decode_masks.WEATHER),
    FunctionTool("get_time", "The local time in a city.", {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"], "additionalProperties": False}),
)
# The person of bench/decode_masks.py, its tags at most 3: greedy, a 135M model repeats an array's item until max_tokens.
PERSON = {**decode_masks.PERSON, "properties": {**decode_masks.PERSON["properties"],
                                                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}}
CONSTRAINED_MAX = 160  # tokens a constrained reply may take (the person takes about 100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--decode-tokens", type=int, default=None, help="tokens per unconstrained decode (default 128; quick 32)")
    group.add_argument("--decode-skip-memory", action="store_true", help="do not measure memory (two model loads in subprocesses)")


@dataclass
class Timed:
    """One generation: when each token came (perf_counter), its ids and text."""

    stamps: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    text: str = ""

    @property
    def tok_s(self) -> float | None:
        span = self.stamps[-1] - self.stamps[0] if len(self.stamps) > 1 else 0
        return (len(self.stamps) - 1) / span if span > 0 else None


class Calls:
    """Every measured call, on one loaded GPT4All and one LlamaEngine (no prefix cache)."""

    def __init__(self, args: argparse.Namespace, registry: ModelRegistry, model):
        self.raw = gpt4all_native.load(model.path, n_ctx=N_CTX, n_threads=args.threads, device="cpu").model
        self.engine = LlamaEngine(model.path, n_ctx=N_CTX, n_threads=args.threads, n_batch=N_BATCH)
        chat = registry.chat_format(model)
        system = {"role": "system", "content": SYSTEM_MESSAGE}
        self.story = chat.render([system, {"role": "user", "content": PROMPTS[0]}])
        self.person = chat.render([system, {"role": "user", "content": JSON_REQUEST}])
        self.json = Constraint(kind="json_schema", schema=schema_text(PERSON))
        conversation = Conversation((Message("system", SYSTEM_MESSAGE), Message("user", TOOL_QUESTION)), TOOLS,
                                    ToolChoice("required"))
        self.plan = plan_chat(conversation, chat)
        self.tool_prompt = chat.render(self.plan.messages, tools=self.plan.tools)
        self.tokens = args.decode_tokens
        self.counts = {"json": CONSTRAINED_MAX, "tool": CONSTRAINED_MAX}  # the warm-up sets them

    def cases(self) -> dict:
        greedy = SamplingParams(max_tokens=self.tokens, temperature=0)
        return {
            "raw": lambda: self.gpt4all(self.story, greedy),
            "ours": lambda: self.ours(self.story, greedy),
            "logprobs": lambda: self.ours(self.story, replace(greedy, logprobs=5)),
            "json": lambda: self.ours(self.person, replace(greedy, max_tokens=CONSTRAINED_MAX, constraint=self.json)),
            "json plain": lambda: self.ours(self.person, replace(greedy, max_tokens=self.counts["json"])),
            "tool": lambda: self.ours(self.tool_prompt, replace(greedy, max_tokens=CONSTRAINED_MAX, constraint=self.plan.constraint)),
            "tool plain": lambda: self.ours(self.tool_prompt, replace(greedy, max_tokens=self.counts["tool"])),
        }

    def gpt4all(self, prompt: str, params: SamplingParams) -> Timed:
        timed, pieces, refused = Timed(), [], []

        def on_response(token: int, piece: bytes) -> bool:
            if token == -1:  # an exception cannot cross GPT4All's C callback: raised after the call
                refused.append(piece.decode("utf-8", "replace"))
                return False
            timed.stamps.append(time.perf_counter())
            timed.ids.append(token)
            pieces.append(piece)
            return True

        gpt4all_native.prompt(self.raw, prompt.encode(), params, n_past=0, n_predict=params.max_tokens, n_batch=N_BATCH,
                              on_prompt_token=lambda _token: True, on_response_token=on_response)
        if refused:
            raise RuntimeError(f"GPT4All refused the prompt: {refused[0]}")
        timed.text = b"".join(pieces).decode("utf-8", "replace")
        return timed

    def ours(self, prompt: str, params: SamplingParams) -> Timed:
        timed, pieces = Timed(), []

        def on_text(text: str, _logprobs=None) -> bool:
            timed.stamps.append(time.perf_counter())
            pieces.append(text)
            return True

        self.engine.generate(prompt, params, on_text)
        timed.ids, timed.text = list(self.engine.last_reply), "".join(pieces)
        return timed

    def checks(self, first: dict[str, Timed]) -> dict[str, bool]:
        """What must hold of the warm-up's outputs: the same greedy ids, valid JSON, a parsed call."""
        try:
            person = json.loads(first["json"].text)
        except ValueError:
            person = None
        parser = self.plan.parser()
        events = parser.feed(first["tool"].text) + parser.finish()
        return {
            "ours": first["ours"].ids == first["raw"].ids,
            "logprobs": first["logprobs"].ids == first["ours"].ids,
            "json": isinstance(person, dict) and set(person) == set(PERSON["properties"]),
            "tool": any(isinstance(event, CallStart) for event in events),
        }

    def close(self) -> None:
        self.engine.close()
        self.raw.close()


def _measure(calls: Calls, runs: int) -> tuple[dict[str, list[Timed]], dict[str, bool]]:
    cases = calls.cases()
    first = {name: call() for name, call in cases.items()}  # warm-up
    calls.counts = {"json": len(first["json"].ids), "tool": len(first["tool"].ids)}  # the cases read them when called
    samples: dict[str, list[Timed]] = {name: [] for name in cases}
    names = list(cases)
    for run_no in range(runs):
        shift = run_no % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(cases[name]())
    checks = calls.checks(first)
    checks["ours"] = checks["ours"] and all(s.ids == first["raw"].ids for s in samples["raw"] + samples["ours"])
    return samples, checks


def _schema_setup(calls: Calls, runs: int) -> dict[str, float]:
    """ms to set up a new schema (check, compile, matcher) and a cached one (check, cache hit, matcher); vocabulary s."""
    vocab, vocab_s = decode_masks.vocabulary_setup(calls.engine.model)
    new, cached = [], []
    for i in range(runs):
        schema = {**PERSON, "description": f"a new schema: run {i} at {time.time_ns()}"}
        constraint = Constraint(kind="json_schema", schema=schema_text(schema))
        for times in (new, cached):
            started = time.perf_counter()
            check_schema(schema, param="response_format.json_schema.schema")
            compile(constraint, vocab).matcher()
            times.append(1000 * (time.perf_counter() - started))
    return {"new_ms": median(new), "cached_ms": median(cached), "vocabulary_s": vocab_s, "vocabulary": vocab}


def _memory(args: argparse.Namespace, kv_mb: float, notes: list[str]) -> dict[str, dict]:
    """Each system's memory figures (bench/decode_memory.py, in a process of its own), with the KV cache's size."""
    found = {}
    for system in ("ours", "gpt4all"):
        done = subprocess.run([sys.executable, "-m", "bench.decode_memory", system, "--n-ctx", str(N_CTX),
                               "--threads", str(args.threads)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "GPT4ALL_NO_UPDATE_CHECK": "1"}, check=False)
        if done.returncode != 0:
            notes.append(f"memory of {system} not measured: bench/decode_memory.py exited {done.returncode}: "
                         f"{done.stderr.strip().splitlines()[-1:]}")
            continue
        found[system] = json.loads(done.stdout.strip().splitlines()[-1])
        found[system]["kv_mb"] = kv_mb
    return found


def run(args: argparse.Namespace) -> list[dict]:
    args.runs = args.runs or (2 if args.quick else 5)
    args.decode_tokens = args.decode_tokens or (32 if args.quick else 128)
    args.threads = engine_threads(args)
    os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
    registry = ModelRegistry(ROOT / "models")
    model = registry.default()
    print(f"decode benchmark: {model.id}, threads={args.threads}, n_batch={N_BATCH}, n_ctx={N_CTX}, "
          f"tokens={args.decode_tokens}, runs={args.runs}, cpus={os.cpu_count()}, load average={load_average()}", flush=True)
    notes: list[str] = []
    if warning := busy_machine_warning():
        print(f"warning: {warning}", flush=True)
        notes.append(warning)
    calls = Calls(args, registry, model)
    try:
        samples, checks = _measure(calls, args.runs)
        setup = _schema_setup(calls, args.runs)
        rows = rows_of(samples, checks, model.id, args)
        for case in ("json", "tool"):
            made, asked = len(samples[f"{case} plain"][0].ids), calls.counts[case]
            if made < asked:
                notes.append(f"{case}: unconstrained, the same prompt ended (an end token) after {made} of the {asked} "
                             "tokens the constrained reply took; its rate is over those")
        step_ms = 1000 / rows[1]["tok_s"] if rows[1].get("tok_s") else 10.0  # our loop's unconstrained step
        vocab = setup.pop("vocabulary")
        mask_rows = decode_masks.per_token_rows(vocab, calls.engine.model, step_ms, args.runs, setup["vocabulary_s"])
        compiles = decode_masks.compile_costs(vocab)
        kv_mb = calls.engine.model.kv_bytes_per_token() * N_CTX / 2**20
    finally:
        calls.close()
    memory = {} if args.decode_skip_memory else _memory(args, kv_mb, notes)
    notes.append(f"load average at the end: {load_average()} on {os.cpu_count()} cpus")
    print_report(rows, setup, mask_rows, compiles, memory, notes, args)
    return publish(NAME, rows, args, {"model": model.id, "goals": GOALS, "schema_setup": setup, "mask_costs": mask_rows,
                                      "compile_ms": compiles, "memory": memory, "checks": checks, "notes": notes})


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()

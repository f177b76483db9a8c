"""What a token mask costs per token and per schema (bench/decode.py runs it against the decode loop's step).

The constraint layer the decode loop uses (models/native/constraint.py, llguidance) on the model's
vocabulary, and xgrammar for comparison when it is installed (it is not a dependency):
- setup: the vocabulary (token pieces from llama.cpp, then the library's tokenizer), once per model;
- compile: one new schema (small; a pydantic-like person; tool-call tags; a ~250 KB schema), and a
  cache hit;
- per token: the mask computed and applied to a float32 logits array (disallowed -> -inf), and the
  token accepted, along the model's own tokenization of a valid output; the two libraries
  alternate token by token, so that a busy machine weighs on both alike. "projected ratio" is
  step / (step + cost), with the decode loop's unconstrained step measured in the same run:
  constrained tokens/s against unconstrained, if nothing else changed (goal: at least 0.9).
  bench/decode.py measures the real ratio too.
"""

from __future__ import annotations

import json
import statistics
import time
from importlib.metadata import version

import numpy as np

from bench.common import format_table
from models.interfaces import Constraint, Tag
from models.native.constraint import CompiledConstraint, Vocabulary, compile

ADDRESS = {"type": "object", "properties": {"street": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
           "required": ["street", "zip"], "additionalProperties": False}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "email": {"type": "string", "format": "email"},
    "colour": {"enum": ["red", "green", "blue"]}, "tags": {"type": "array", "items": {"type": "string"}}, "address": ADDRESS,
    "height_m": {"type": "number"}, "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    "required": ["name", "age", "email", "colour", "tags", "address", "height_m", "nickname"], "additionalProperties": False}
PERSON_TEXT = json.dumps({"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "colour": "green",
                          "tags": ["mathematician", "writer", "analyst"],
                          "address": {"street": "12 St James's Square", "zip": "10001"}, "height_m": 1.65, "nickname": None},
                         indent=2)
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TAGS = Constraint(kind="tags", text=True, triggers=("<tool_call>",), tags=(
    Tag('<tool_call>\n{"name": "get_weather", "arguments": ', json.dumps(WEATHER), "}\n</tool_call>"),
    Tag('<tool_call>\n{"name": "get_time", "arguments": ', '{"type": "object"}', "}\n</tool_call>")))
TAGS_TEXT = ("Let me look that up for you; the forecast service knows the weather in most cities of the world. "
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>')


def _large_schema() -> dict:
    """About 250 KB of compact JSON: 400 objects of enums, patterns and numbers (under MAX_SCHEMA_BYTES)."""
    item = lambda i: {"type": "object", "description": f"field group {i} " + "x" * 300, "properties": {
        "kind": {"enum": [f"kind-{i}-{j}" for j in range(8)]}, "code": {"type": "string", "pattern": f"^{i}-[a-z]{{3}}$"},
        "value": {"type": "number", "minimum": 0, "maximum": i + 1}}, "required": ["kind"]}
    return {"type": "object", "properties": {f"group_{i}": item(i) for i in range(400)}}


def _llguidance_stepper(compiled: CompiledConstraint):
    """A new generation's per-token work: the mask, applied to the logits as xgrammar's stepper does, and the token
    accepted. (The decode loop filters its candidate array by the same mask instead: bench/decode.py measures that.)"""
    matcher = compiled.matcher()

    def step(logits: np.ndarray, token: int) -> None:
        np.copyto(logits, np.float32(-np.inf), where=~matcher.allowed())
        matcher.accept(token)
    return step


def _xgrammar_setup(vocab: Vocabulary, schema: dict):
    """(a new-generation stepper factory, setup s, compile ms) for xgrammar, or None when it is not installed."""
    started = time.perf_counter()
    try:
        import xgrammar
    except ImportError:
        return None
    info = xgrammar.TokenizerInfo(list(vocab.pieces), vocab_type=xgrammar.VocabType.RAW, vocab_size=vocab.n_vocab,
                                  stop_token_ids=list(vocab.end_ids))
    compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    setup_s = time.perf_counter() - started  # its import included: 2-3 s of it
    started = time.perf_counter()
    grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=True)
    compile_ms = 1000 * (time.perf_counter() - started)
    bitmask = xgrammar.allocate_token_bitmask(1, vocab.n_vocab)

    def stepper():
        matcher = xgrammar.GrammarMatcher(grammar)

        def step(logits: np.ndarray, token: int) -> None:
            matcher.fill_next_token_bitmask(bitmask)
            allowed = np.unpackbits(bitmask.numpy().view(np.uint8), count=vocab.n_vocab, bitorder="little").view(bool)
            np.copyto(logits, np.float32(-np.inf), where=~allowed)
            assert matcher.accept_token(token)
        return step
    return stepper, setup_s, compile_ms


def _per_token_us(steppers: dict, tokens: list[int], runs: int, n_vocab: int) -> dict[str, list[float]]:
    """µs per token of each library, interleaved token by token so that a busy machine weighs on all alike."""
    noise = np.random.default_rng(0).standard_normal(n_vocab).astype(np.float32)
    costs: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(runs):
        steps = {name: new() for name, new in steppers.items()}
        for token in tokens:
            for name, step in steps.items():
                logits = noise.copy()
                started = time.perf_counter()
                step(logits, token)
                costs[name].append(1e6 * (time.perf_counter() - started))
    return costs


def _row(library: str, case: str, costs: list[float], step_ms: float, **extra) -> dict:
    mean = statistics.fmean(costs)
    return {"library": library, "case": case, "median_token_us": statistics.median(costs), "mean_token_us": mean,
            "projected_ratio": step_ms / (step_ms + mean / 1000), **extra}


def _compile_ms(constraint: Constraint, vocab: Vocabulary) -> float:
    started = time.perf_counter()
    CompiledConstraint(constraint, vocab)  # not through the cache: a new schema each time
    return 1000 * (time.perf_counter() - started)


def per_token_rows(vocab: Vocabulary, tokenizer, step_ms: float, runs: int, setup_s: float) -> list[dict]:
    """µs per token of each library and case, `runs` times along a valid output; `step_ms` the unconstrained step."""
    person = Constraint(kind="json_schema", schema=json.dumps(PERSON))
    cases = {"json (person)": (person, PERSON_TEXT), "tags (auto: text, then a call)": (TAGS, TAGS_TEXT)}
    xgr = _xgrammar_setup(vocab, PERSON)
    if xgr is None:
        print("xgrammar is not installed: no comparison row")
    rows = []
    for case, (constraint, text) in cases.items():
        tokens = tokenizer.tokenize(text.encode(), at_start=False, insert_space=False, special=False)
        compiled = compile(constraint, vocab)
        steppers = {"llguidance": lambda: _llguidance_stepper(compiled)}
        if xgr and constraint is person:
            steppers["xgrammar"] = xgr[0]
        costs = _per_token_us(steppers, tokens, runs, vocab.n_vocab)
        rows.append(_row(f"llguidance {version('llguidance')}", case, costs["llguidance"], step_ms, tokens=len(tokens),
                         setup_s=setup_s, compile_ms=_compile_ms(constraint, vocab)))
        if "xgrammar" in costs:
            rows.append(_row(f"xgrammar {version('xgrammar')}", case, costs["xgrammar"], step_ms, tokens=len(tokens),
                             setup_s=xgr[1], compile_ms=xgr[2]))
    return rows


def compile_costs(vocab: Vocabulary) -> dict[str, float]:
    """ms to compile a new small schema and a ~250 KB one (never from the cache), and a cache hit."""
    large = Constraint(kind="json_schema", schema=json.dumps(_large_schema(), separators=(",", ":")))
    small = Constraint(kind="json_schema", schema='{"type": "object", "properties": {"a": {"type": "integer"}}}')
    costs = {"small": _compile_ms(small, vocab), f"large ({len(large.schema) // 1024} KB)": _compile_ms(large, vocab)}
    compile(small, vocab)
    started = time.perf_counter()
    compile(small, vocab)
    costs["cache hit"] = 1000 * (time.perf_counter() - started)
    return costs


def vocabulary_setup(model) -> tuple[Vocabulary, float]:
    """The constraint layer's view of `model`'s vocabulary, built as the engine builds it, and the seconds it took."""
    started = time.perf_counter()
    vocab = Vocabulary.from_model(model)
    vocab.llguidance_tokenizer()
    return vocab, time.perf_counter() - started


def print_mask_costs(rows: list[dict], compiles: dict[str, float]) -> None:
    print(format_table(rows, [("library", "library"), ("case", "case"), ("tokens", "tokens", 0),
                              ("median_token_us", "µs/token (median)", 1), ("mean_token_us", "µs/token (mean)", 1),
                              ("projected_ratio", "projected ratio", 3), ("setup_s", "vocab setup s", 2),
                              ("compile_ms", "compile ms", 2)]))
    print("llguidance compile, new schema: " + ", ".join(f"{k} {v:.2f} ms" for k, v in compiles.items()))

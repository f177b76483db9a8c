"""The native decode loop on GPT4All's own llama.cpp: our decode steps, sampling and constraints, through ctypes.

GPT4All 2.8.2 loads `libllamamodel-mainline-*.so`, which exports llama.cpp's whole C API (commit
443665a); this package drives it directly instead of GPT4All's black-box prompt call, so that the
logits pass through our hands (see the README's "How it works" and issue 18).

Modules so far:
- `constraint`: structured output (JSON Schema, tool-call tags) as a token mask, on llguidance;
  built from `schema_check` (which schemas are accepted), `grammar` (a `Constraint` as an
  llguidance grammar) and `vocabulary` (the model's tokens as raw bytes, and the compile cache).

Nothing above `models/` imports ctypes or the constraint library: they see `models.interfaces`.
"""

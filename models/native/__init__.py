"""Our own decode loop on the llama.cpp library that GPT4All ships.

GPT4All 2.8.2's `libllamamodel-mainline-*.so` exports llama.cpp's whole C API at the commit it
bundles (nomic-ai/llama.cpp 443665a). Driving it ourselves gives what GPT4All's prompt call hides:
the logits. Split by what changes together:

- `llama_api`: the library (the build GPT4All's own loader picks), its ctypes declarations and the
  check of their layout;
- `llama_model`: a loaded model: vocabulary, tokenizer, special tokens;
- `llama_context`: one context on it: batches, the KV cache, the logits;
- `sampler`: GPT4All's sampling chain and OpenAI's extras (bias, penalties, seed, logprobs);
- `constraint`: token masks from a JSON Schema or tool-call tags.

Nothing above `models/` sees ctypes.
"""

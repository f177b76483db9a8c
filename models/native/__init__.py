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

**Calls that abort the process** (a C++ exception or GGML_ASSERT cannot be caught from Python), and
how they are never made with inputs that abort:
- `llama_tokenize_gpt4all` on text that is not UTF-8: `LlamaModel.tokenize` refuses it first;
- `llama_token_to_piece` with an id outside the vocabulary: ids come from the sampler (within
  `n_vocab`), and `logit_bias` ids are checked against `n_vocab` before evaluation;
- `llama_decode` past the context or with a batch over its size: `LlamaContext.evaluate` checks both
  (and `_check_fits` refuses a prompt plus `max_tokens` over the window before evaluation);
- `llama_get_logits_ith` with no logits: every generation evaluates at least its prompt's last token;
- `llama_grammar_accept_token` with a refused token: not used; the mask library (llguidance) is
  asked first, and `Matcher.accept` checks the mask before it consumes a token.

Several sequences in one context (one `llama_decode` for several conversations) is left for later:
measured not exact (DESIGN.md). `LlamaContext` keeps one sequence; a batching scheduler would add
sequences to `evaluate` and give the sampler one row of logits each.
"""

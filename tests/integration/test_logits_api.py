"""What the decode loop's logits give the API, through the `openai` SDK: logprobs (chat's and
completions' shapes, plain and streamed), seed, logit_bias and penalties. The engine-level
arithmetic is tested in test_sampling.py; here, OpenAI's shapes and that each parameter is honoured."""

from __future__ import annotations

QUESTION = [{"role": "user", "content": "Name three colours."}]


def test_chat_logprobs_have_openais_shape_and_spell_the_reply(openai_client, default_model):
    reply = openai_client.chat.completions.create(model=default_model, messages=QUESTION, max_tokens=10, temperature=0,
                                                  logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert b"".join(bytes(e.bytes) for e in entries).decode() == choice.message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].token == entry.token  # greedy: the most likely one was chosen
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob


def test_streamed_chat_logprobs_are_the_plain_ones(openai_client, default_model):
    fields = {"model": default_model, "messages": QUESTION, "max_tokens": 10, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    plain = openai_client.chat.completions.create(**fields).choices[0].logprobs.content
    chunks = [c for c in openai_client.chat.completions.create(stream=True, **fields) if c.choices]
    streamed = [entry for c in chunks if c.choices[0].logprobs for entry in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in plain]
    assert all(c.choices[0].logprobs is None for c in chunks if not c.choices[0].delta.content and c.choices[0].finish_reason)


def test_completion_logprobs_have_the_legacy_shape_plain_and_streamed(openai_client, default_model):
    fields = {"model": default_model, "prompt": "The colours of the rainbow are", "max_tokens": 8, "temperature": 0, "logprobs": 2}
    choice = openai_client.completions.create(**fields).choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == len(logprobs.text_offset) == len(logprobs.tokens)
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    assert all(1 <= len(top) <= 2 for top in logprobs.top_logprobs)
    streamed = [c.choices[0].logprobs for c in openai_client.completions.create(stream=True, **fields) if c.choices[0].logprobs]
    assert [t for lp in streamed for t in lp.tokens] == logprobs.tokens
    assert [o for lp in streamed for o in lp.text_offset] == logprobs.text_offset


def test_a_seed_holds_at_a_temperature_and_n_choices_draw_from_seed_plus_i(openai_client, default_model):
    fields = {"model": default_model, "messages": QUESTION, "max_tokens": 16, "temperature": 1.3, "seed": 11}
    first = openai_client.chat.completions.create(**fields).choices[0].message.content
    assert openai_client.chat.completions.create(**fields).choices[0].message.content == first
    pair = openai_client.chat.completions.create(n=2, **fields).choices
    assert pair[0].message.content == first
    assert pair[1].message.content == openai_client.chat.completions.create(**{**fields, "seed": 12}).choices[0].message.content


def test_logit_bias_minus_100_bans_the_greedy_first_token(openai_client, default_model):
    fields = {"model": default_model, "messages": QUESTION, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 5}
    first = openai_client.chat.completions.create(**fields).choices[0].logprobs.content[0]
    banned_id = str(_token_id(openai_client, default_model, first.token))
    other = openai_client.chat.completions.create(logit_bias={banned_id: -100}, **fields).choices[0].logprobs.content[0]
    assert other.token != first.token


def _token_id(client, model: str, token: str) -> int:
    """The id of a token's text, by biasing candidates until the greedy choice is that text (no tokenizer endpoint)."""
    from models.native.llama_model import LlamaModel
    from models.registry import ModelRegistry
    from tests.conftest import ROOT

    vocab = LlamaModel.load(ModelRegistry(ROOT / "models", model).get(model).path, vocab_only=True)
    try:
        return next(i for i in range(vocab.n_vocab) if vocab.piece(i) == token.encode())
    finally:
        vocab.close()


def test_penalties_change_a_repetitive_reply(openai_client, default_model):
    fields = {"model": default_model, "messages": [{"role": "user", "content": "Repeat the word yes ten times."}],
              "max_tokens": 20, "temperature": 0}
    plain = openai_client.chat.completions.create(**fields).choices[0].message.content
    penalised = openai_client.chat.completions.create(frequency_penalty=2.0, presence_penalty=2.0, **fields).choices[0].message.content
    assert penalised != plain

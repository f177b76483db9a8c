"""The prefix cache under the traffic of a shared server (issue 17): more conversations than contexts.

One server with the default four contexts (`PREFIX_CACHE_SLOTS=4`) and two keys. In each scenario,
a conversation that continues keeps at least its previous prompt (less the two tokens an exact cut
may give back) in `cached_tokens`, and /metrics' hit ratio shows the reuse. Before the fix, once four
conversations had filled the contexts, every new conversation cut the same context back to the chat
template's first tokens: `cached_tokens` was 9 on every turn, from the first to the last.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_server

MAX_TOKENS = 8
TOPICS = ["sailing", "baking", "chess", "gardening", "astronomy", "pottery", "cycling", "origami"]


def system_prompt(topic: str) -> str:
    """About 200 tokens, sharing nothing with another topic's but the template's first tokens."""
    return f"You are an expert on {topic}. " + f"Answer questions about {topic} briefly and kindly. " * 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("traffic"), API_KEYS="sk-long,sk-many", PREFIX_CACHE_SLOTS="4")
    yield server
    server.stop()


class Conversation:
    def __init__(self, server, system: str, key: str = "sk-long"):
        self.server, self.key = server, key
        self.messages = [{"role": "system", "content": system}]
        self.usages: list[dict] = []

    def turn(self, question: str = "Tell me one more thing.") -> dict:
        self.messages.append({"role": "user", "content": question})
        response = httpx.post(self.server.base_url + "/v1/chat/completions", headers=self.server.headers(self.key), timeout=300,
                              json={"messages": self.messages, "max_tokens": MAX_TOKENS, "temperature": 0})
        assert response.status_code == 200, response.text
        body = response.json()
        self.messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
        self.usages.append(body["usage"])
        return body["usage"]

    def kept_its_previous_prompt(self) -> bool:
        previous, last = self.usages[-2], self.usages[-1]
        return last["prompt_tokens_details"]["cached_tokens"] >= previous["prompt_tokens"] - 2


def tokens(server, key: str = "sk-long") -> dict:
    return httpx.get(server.base_url + "/metrics", headers=server.headers(key), timeout=30).json()["tokens"]


def test_new_conversations_with_their_own_system_prompts_reuse_after_every_context_is_taken(server):
    first_round = [Conversation(server, system_prompt(topic)) for topic in TOPICS[:4]]
    for _ in range(2):
        for conversation in first_round:
            conversation.turn()
    before = tokens(server)
    second_round = [Conversation(server, system_prompt(topic)) for topic in TOPICS[4:]]
    for turn in range(3):
        for conversation in second_round:
            conversation.turn()
            if turn:
                assert conversation.kept_its_previous_prompt(), conversation.usages
    after = tokens(server)
    cached, prompt = after["prompt_cached"] - before["prompt_cached"], after["prompt"] - before["prompt"]
    assert cached / prompt > 0.5  # two turns of three reuse (nearly) all of their prompt
    assert after["cache_hit_ratio"] > before["cache_hit_ratio"]


def test_conversations_sharing_a_system_prompt_reuse_it_and_the_live_ones_keep_their_contexts(server):
    shared = system_prompt("tea")
    live = [Conversation(server, shared), Conversation(server, shared)]
    for conversation in live:
        conversation.turn("Hello!")
    for index in range(4):  # new conversations arrive between the live ones' turns
        newcomer = Conversation(server, shared)
        usage = newcomer.turn(f"Question number {index}?")
        system_tokens = live[0].usages[0]["prompt_tokens"] - 10  # the shared system prompt, roughly
        assert usage["prompt_tokens_details"]["cached_tokens"] >= system_tokens  # copied from a live context
        conversation = live[index % 2]
        conversation.turn()
        assert conversation.kept_its_previous_prompt(), conversation.usages


def test_a_conversation_that_branches_at_an_edited_turn_keeps_both_prefixes(server):
    conversation = Conversation(server, system_prompt("rivers"))
    for question in ("Which river is longest?", "And the widest?", "And the deepest?"):
        conversation.turn(question)
    edited = Conversation(server, system_prompt("rivers"))
    edited.messages = conversation.messages[:3]  # system, question 1, answer 1: question 2 is edited
    usage = edited.turn("Edited: and the coldest?")
    assert usage["prompt_tokens_details"]["cached_tokens"] >= conversation.usages[0]["prompt_tokens"] - 2
    edited.turn()
    assert edited.kept_its_previous_prompt()
    conversation.turn()  # the original branch kept its context too
    assert conversation.kept_its_previous_prompt()


def test_a_key_with_many_short_conversations_cannot_take_every_context_from_a_key_with_one_long_one(server):
    long = Conversation(server, system_prompt("whales"), key="sk-long")
    long.turn("Hello!")
    for round_ in range(2):
        for topic in TOPICS[:4]:  # four new conversations of the other key between two turns
            Conversation(server, system_prompt(topic) + f" ({round_})", key="sk-many").turn()
        long.turn()
        assert long.kept_its_previous_prompt(), long.usages

"""Why a chat page reply stopped mid-way: the backend names the limit, the page says it in a notice."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gradio_ui.backend import CutShort
from gradio_ui.chat_app import NOTICE, cut_short_notice, model_messages
from gradio_ui.scheduler_backend import SchedulerChatBackend
from models.interfaces import GenerationOutcome


@pytest.mark.parametrize(
    "prompt_tokens, completion_tokens, expected",
    [
        (20, 8, CutShort("max_tokens", 8)),  # the reply used all of max_tokens
        (95, 5, CutShort("context")),  # prompt + reply filled the window of 100 first
        (20, 3, CutShort("time")),  # neither: GENERATION_TIMEOUT_S ended it
    ],
)
def test_the_backend_names_the_limit_a_reply_reached(prompt_tokens, completion_tokens, expected):
    backend = SchedulerChatBackend(SimpleNamespace(settings=SimpleNamespace(n_ctx=100)))
    outcome = GenerationOutcome(prompt_tokens, completion_tokens, "length")
    assert backend._cut_short(outcome, max_tokens=8) == expected


def test_each_limit_has_its_own_notice_and_no_notice_reaches_the_model():
    texts = [cut_short_notice(CutShort("max_tokens", 8))["content"], cut_short_notice(CutShort("context"))["content"],
             cut_short_notice(CutShort("time"))["content"]]
    assert texts[0] == f"{NOTICE}Cut short: the reply reached Max tokens (8). Raise it and press Retry for a longer reply."
    assert "context window" in texts[1] and "time limit" in texts[2]
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "assistant", "content": texts[0]}]
    assert model_messages("", chat) == chat[:2]

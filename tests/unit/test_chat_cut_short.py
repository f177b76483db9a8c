"""Why a chat page reply stopped mid-way: the backend passes on the limit, the page says it in a notice."""

from __future__ import annotations

from gradio_ui.backend import CutShort
from gradio_ui.chat_app import NOTICE, cut_short_notice, model_messages


def test_each_limit_has_its_own_notice_and_no_notice_reaches_the_model():
    texts = [cut_short_notice(CutShort("max_tokens", 8))["content"], cut_short_notice(CutShort("context"))["content"],
             cut_short_notice(CutShort("time"))["content"]]
    assert texts[0] == f"{NOTICE}Cut short: the reply reached Max tokens (8). Raise it and press Retry for a longer reply."
    assert "context window" in texts[1] and "time limit" in texts[2]
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "assistant", "content": texts[0]}]
    assert model_messages("", chat) == chat[:2]

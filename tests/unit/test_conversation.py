"""Plain chat histories (the chat page's) as conversations, and tool-shaped messages in them."""

from __future__ import annotations

from gradio_ui.chat_app import model_messages, plain
from models.conversation import Message, text_conversation


def test_plain_dicts_become_a_conversation_without_tools():
    conversation = text_conversation([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "content": "21 C", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is 21 C."},
    ])
    assert conversation.messages == (Message("system", "Be brief."), Message("user", "hi"), Message("assistant", ""),
                                      Message("assistant", "It is 21 C."))
    assert conversation.tools == () and not conversation.calls_tools


def test_the_chat_page_reads_messages_without_content():
    chat = plain([{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                  {"role": "assistant", "content": None}, {"role": "assistant", "content": "ok"}])
    assert chat == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
                    {"role": "assistant", "content": "ok"}]
    assert model_messages("sys", chat)[0] == {"role": "system", "content": "sys"}

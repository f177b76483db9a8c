"""Reading and driving the Gradio chat page in Playwright; shared by the fake- and real-model UI tests."""

from __future__ import annotations

import time

from tests.helpers.browser import ARTIFACTS

BOT = '#chatbot [data-testid="bot"]'
NOTICE = "⚠️"
CUT_SHORT = "⚠️ Cut short"


def last_bot_text(page) -> str:
    texts = page.locator(BOT).all_inner_texts()
    return texts[-1].strip() if texts else ""


def last_answer_text(page) -> str:
    """The last bot message that is the model's text, not a notice (the UI's own messages start with ⚠️)."""
    texts = [t.strip() for t in page.locator(BOT).all_inner_texts()]
    return next((t for t in reversed(texts) if not t.startswith(NOTICE)), "")


def wait_until(page, condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        page.wait_for_timeout(50)  # lets Playwright deliver its events meanwhile (time.sleep would stall them)


def set_max_tokens(page, value: int) -> None:
    box = page.locator("#max-tokens input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()
    assert box.input_value() == str(value)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

"""The fix to Gradio's page client (gradio_ui/stream_reopen.py): it applies to the pinned Gradio's
bundle, exactly once, and leaves a bundle of another shape alone. The browser test
`test_no_answer_is_lost_when_the_event_stream_closes_late` shows what it fixes."""

from __future__ import annotations

from gradio_ui.stream_reopen import ASSETS, patched, patched_bundle

HANDLER = "if(s.msg===`close_stream`){wt(r,o.abort_controller);return}"
CLIENT = ("async function Ct(){let{event_callbacks:e,unclosed_events:t,stream_status:r}=this,o=this;"
          "s.onmessage=async function(a){let s=JSON.parse(a.data);" + HANDLER + "let c=s.event_id}}")


def test_the_pinned_gradios_bundle_is_patched_once():
    found = patched_bundle()
    assert found is not None, f"no bundle under {ASSETS} has the close_stream handler: re-check the fix"
    name, body = found
    original = (ASSETS / name).read_text(encoding="utf-8")
    text = body.decode("utf-8")
    assert len(text) - len(original) == len("t.size&&o.open_stream();")
    assert text.count(".open_stream();return}") == 1


def test_on_close_stream_a_stream_opens_again_for_events_not_completed():
    fixed = patched(CLIENT)
    assert fixed == CLIENT.replace(HANDLER, HANDLER.replace("return}", "t.size&&o.open_stream();return}"))


def test_a_bundle_of_another_shape_is_left_alone():
    assert patched("let a=1") is None
    assert patched(CLIENT + CLIENT) is None  # two handlers: which one is the client's is unclear
    assert patched(CLIENT.replace("unclosed_events:t,", "")) is None  # the set's name is unknown

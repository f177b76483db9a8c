"""Chat templates cannot hang the server: runaway templates are refused when the model loads, a slow
render is cut at the time limit, and defusing control tokens is one pass however many there are.

The `.gguf` files are small metadata-only files written here with gguf's own writer (a template,
a few tokens and their types): the registry reads exactly these fields, and the real model's
49k-token vocabulary takes seconds to read on a busy machine.
"""

from __future__ import annotations

import asyncio
import re
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from api.generation import GenerationService
from errors import InvalidRequest, ModelLoadFailed
from models.chat_template import ZWJ, ChatFormat
from models.conversation import text_conversation
from models.registry import ModelRegistry
from tests.conftest import ROOT

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NESTED_RANGE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + CHATML
HUGE_STRING = "{{ 'x' * 2**33 }}" + CHATML
OUTPUT_FLOOD = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}" + CHATML
# Legal and quick on a short conversation, quadratic in a message's length.
SLOW_ON_LONG = "{% for m in messages %}{% for a in m['content'] %}{% for b in m['content'] %}{% endfor %}{% endfor %}{% endfor %}" + CHATML
TIME_LIMIT_S = 2.0  # the default CHAT_TEMPLATE_TIMEOUT_S
SLACK_S = 4.0  # a busy shared machine


def write_gguf(folder: Path, name: str, template: str, tokens=("<unk>", "<|im_start|>", "<|im_end|>", "<tool>", "a"),
               types=(2, 3, 3, 4, 1)) -> Path:
    import gguf

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.chat_template", template)
    writer.add_token_list(list(tokens))
    writer.add_token_types(list(types))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture()
def models(tmp_path) -> Path:
    folder = tmp_path / "models"
    for name, template in [("good.gguf", CHATML), ("nested-range.gguf", NESTED_RANGE), ("huge-string.gguf", HUGE_STRING),
                           ("output-flood.gguf", OUTPUT_FLOOD), ("slow-on-long.gguf", SLOW_ON_LONG)]:
        write_gguf(folder, name, template)
    return folder


# ---- refused at load ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [("nested-range.gguf", "within 2 s"), ("huge-string.gguf", "memory"), ("output-flood.gguf", "characters")],
)
def test_a_runaway_template_is_refused_when_the_model_loads_with_a_clear_error(models, name, reason):
    registry = ModelRegistry(models, "good.gguf")
    started = time.monotonic()
    with pytest.raises(ModelLoadFailed) as refused:
        registry.chat_format(registry.get(name))
    assert time.monotonic() - started < TIME_LIMIT_S + SLACK_S
    assert name in refused.value.message and reason in refused.value.message, refused.value.message
    assert refused.value.body()["error"]["code"] == "model_load_failed"
    # The verdict is kept: asking again answers at once, without rendering again.
    started = time.monotonic()
    with pytest.raises(ModelLoadFailed):
        registry.chat_format(registry.get(name))
    assert time.monotonic() - started < 0.5
    assert registry.chat_format(registry.get("good.gguf")).render([{"role": "user", "content": "hi"}]).endswith("assistant\n")


async def test_the_service_keeps_answering_while_a_runaway_template_is_stopped(models):
    service = GenerationService(None, ModelRegistry(models, "good.gguf"))
    hello = [{"role": "user", "content": "hello"}]
    refused = asyncio.create_task(service.chat_prompt(service.registry.get("nested-range.gguf"), text_conversation(hello)))
    longest_gap = 0.0

    async def tick() -> None:
        nonlocal longest_gap
        while not refused.done():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            longest_gap = max(longest_gap, time.monotonic() - before)

    ticking, served = asyncio.create_task(tick()), 0
    while not refused.done():  # other requests are answered meanwhile
        prompt, _ = await service.chat_prompt(service.registry.get("good.gguf"), text_conversation(hello))
        assert prompt.endswith("<|im_start|>assistant\n")
        served += 1
    await ticking
    assert served >= 2 and longest_gap < 0.5, (served, longest_gap)  # and the event loop never stalls
    with pytest.raises(ModelLoadFailed, match="nested-range.gguf"):
        refused.result()
    with pytest.raises(ModelLoadFailed, match="nested-range.gguf"):  # every later request gets the same clear error
        await service.chat_prompt(service.registry.get("nested-range.gguf"), text_conversation(hello))


async def test_a_slow_but_legal_render_is_cut_at_the_time_limit(models):
    service = GenerationService(None, ModelRegistry(models, "good.gguf"))
    model = service.registry.get("slow-on-long.gguf")
    assert (await service.chat_prompt(model, text_conversation([{"role": "user", "content": "short"}])))[0].endswith("assistant\n")
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as cut:
        await service.chat_prompt(model, text_conversation([{"role": "user", "content": "y" * 12000}]))  # 144M loop turns, ~20 s
    assert time.monotonic() - started < TIME_LIMIT_S + SLACK_S
    assert cut.value.status == 400 and cut.value.code == "chat_template_limit" and cut.value.param == "messages"
    assert "within 2 s" in cut.value.message
    # The killed worker is replaced: the next render is served as usual.
    assert (await service.chat_prompt(model, text_conversation([{"role": "user", "content": "again"}])))[0].endswith("assistant\n")


# ---- defusing ----------------------------------------------------------------------------------


async def test_the_prompt_rendered_in_the_sandbox_is_defused(models):
    service = GenerationService(None, ModelRegistry(models, "good.gguf"))
    prompt, _ = await service.chat_prompt(service.registry.get("good.gguf"),
                                          text_conversation([{"role": "user", "content": "hi<|im_end|><unk>"}]))
    assert prompt == f"<|im_start|>user\nhi<{ZWJ}|im_end|><{ZWJ}unk><|im_end|>\n<|im_start|>assistant\n"


def test_unknown_type_tokens_are_defused_with_control_and_user_defined_ones(models):
    registry = ModelRegistry(models, "good.gguf")
    chat_format = registry.chat_format(registry.get("good.gguf"))
    assert set(chat_format.control_tokens) == {"<unk>", "<|im_start|>", "<|im_end|>", "<tool>"}
    assert chat_format.defuse("a<unk>b<tool>") == f"a<{ZWJ}unk>b<{ZWJ}tool>"


LLAMA3_CONTROLS = tuple(sorted(
    ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
     "<|python_tag|>", "<|finetune_right_pad_id|>"] + [f"<|reserved_special_token_{i}|>" for i in range(248)],
    key=len, reverse=True,
))


def one_token_at_a_time(text: str, tokens: tuple[str, ...]) -> str:
    """The behaviour to keep: a zero-width joiner after the first character of every control-token text."""
    for token in tokens:
        text = text.replace(token, token[0] + ZWJ + token[1:])
    return text


def best_time(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def test_defusing_4_mib_against_256_control_tokens_costs_about_what_one_token_costs():
    # Every `<` starts a near miss of 250 tokens (`<|reserved_special_token_`) or a real `<|eot_id|>`.
    content = ("Hello <|eot_id|> world <|reserved_special_token_" + "x" * 40 + " ") * (4 * 2**20 // 90)
    one, many = ChatFormat("", control_tokens=("<|eot_id|>",)), ChatFormat("", control_tokens=LLAMA3_CONTROLS)
    assert many.defuse(content) == one.defuse(content) == one_token_at_a_time(content, ("<|eot_id|>",))
    # One pass: 256 tokens cost a small factor of one token (one scan per token would be ~256 times).
    ratio = best_time(lambda: many.defuse(content)) / best_time(lambda: one.defuse(content))
    assert ratio < 5, ratio


def test_defusing_keeps_a_zero_width_joiner_after_the_first_character_of_every_control_token():
    tokens = LLAMA3_CONTROLS + ("<|im_start|>", "<|im_end|>", "<unk>")
    content = "".join(tokens) + " plain <|eot_id|>text<|reserved_special_token_12 <|<|eot_id|><|im_end|>\n<unk>"
    chat_format = ChatFormat("", control_tokens=tuple(sorted(tokens, key=len, reverse=True)))
    defused = chat_format.defuse(content)
    assert defused == one_token_at_a_time(content, chat_format.control_tokens)
    assert defused.replace(ZWJ, "") == content
    assert not any(token in defused for token in tokens)


def test_overlapping_control_tokens_leave_no_token_whole():
    chat_format = ChatFormat("", control_tokens=("<|im_end|>", "x<"))
    defused = chat_format.defuse("ax<|im_end|>")
    assert "<|im_end|>" not in defused and "x<" not in defused and defused.replace(ZWJ, "") == "ax<|im_end|>"


# ---- jinja2 --------------------------------------------------------------------------------------


def test_jinja2_is_pinned_past_its_sandbox_escapes():
    line = next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("jinja2"))
    assert re.fullmatch(r"jinja2>=3\.1\.6,<4", line.split("#")[0].replace(" ", "")), line  # CVE-2024-56326, CVE-2025-27516
    assert tuple(int(part) for part in version("jinja2").split(".")[:3]) >= (3, 1, 6)

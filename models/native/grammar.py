"""A `Constraint` (models/interfaces.py) as an llguidance grammar: JSON Schema, or tool-call tags in Lark.

- "json_schema": llguidance's JSON grammar with our options (schema_check.JSON_OPTIONS: never
  lenient, bounded whitespace). The output starts at the `{` (no leading whitespace) and ends at
  the last byte of the value; llguidance then stops by itself.
- "tags" with `text` (tool_choice "auto"): any text; where the model writes a trigger, a tag
  whose `begin` starts with it is enforced to its `end` (llguidance's "lazy" lexeme: the trigger
  ends the free text at its first occurrence). At most `at_most` tags: past that, and after the
  last tag, the text may not contain a trigger at all, so no unenforced tag can follow. With no
  tags and `at_most` 0 (tool_choice "none" on a template whose calls start with a trigger), that
  is all: free text in which no trigger is ever written.
- "tags" without `text` (tool_choice "required" or a named function): only tags, joined by
  `separator`, between `at_least` and `at_most` of them.
Each tag's JSON is a named sub-grammar (`@args_<i>`), so no schema text is pasted into Lark.
"""

from __future__ import annotations

import json

import orjson

from models.interfaces import Constraint, Tag
from models.native.schema_check import JSON_OPTIONS, check_schema, closed, grammar_for_schema


def grammar_for(constraint: Constraint) -> str:
    """The llguidance grammar (its JSON form) for `constraint`; SchemaRefused for a schema it cannot enforce,
    ValueError for a constraint the API layer should never have built (a tag with no trigger...)."""
    if constraint.kind == "json_schema":
        return grammar_for_schema(_checked_schema(constraint.schema))
    if constraint.kind == "tags":
        return _tags_grammar(constraint)
    raise ValueError(f"unknown constraint kind {constraint.kind!r}")


def _checked_schema(text: str) -> dict | bool:
    try:
        schema = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"a constraint's schema is not JSON text: {exc}") from None
    check_schema(schema)  # the API layer has checked it (naming its param); this keeps compile safe on its own
    return schema


def _tags_grammar(constraint: Constraint) -> str:
    _check_counts(constraint)
    tags = constraint.tags
    rules = [f"tag: {' | '.join(f'tag_{i}' for i in range(len(tags)))}"] if tags else []
    if not tags:
        rules += _free_text_rules(constraint, list(constraint.triggers))
    elif constraint.text:
        triggers = [_trigger(tag, constraint.triggers) for tag in tags]
        rules += _free_text_rules(constraint, triggers)
        for i, (tag, trigger) in enumerate(zip(tags, triggers)):
            rules.append(f"tag_{i}_head[lazy]: ANY {_literal(trigger)}")
            rules.append(f"tag_{i}: tag_{i}_head {_body(i, tag, tag.begin[len(trigger):])}")
    else:
        rules.insert(0, f"start: {_joined(constraint)}")
        rules += [f"tag_{i}: {_body(i, tag, tag.begin)}" for i, tag in enumerate(tags)]
    lark = "%llguidance {}\n" + "\n".join(rules) + "\n"
    grammars = [{"name": "main", "lark_grammar": lark}]
    grammars += [{"name": f"args_{i}", "json_schema": _with_options(_checked_schema(tag.schema))} for i, tag in enumerate(tags)]
    return json.dumps({"grammars": grammars})


def _check_counts(constraint: Constraint) -> None:
    if not constraint.tags and not (constraint.text and constraint.at_most == 0 and any(constraint.triggers)):
        raise ValueError("a tags constraint needs at least one tag, or text, at_most=0 and the triggers it forbids")
    low, high = constraint.at_least, constraint.at_most
    if low < 0 or (high is not None and high < low):
        raise ValueError(f"tag counts out of order: at_least={low}, at_most={high}")
    if not constraint.text and high == 0:
        raise ValueError("a tags constraint without text and with at_most=0 allows no output at all")


def _free_text_rules(constraint: Constraint, triggers: list[str]) -> list[str]:
    """Text, then tags each preceded by text, then text with no trigger in it."""
    no_trigger = " | ".join(_literal(t) for t in dict.fromkeys(triggers))
    count = _repeat(constraint.at_least, constraint.at_most)
    start = f"start: tag{count} TEXT_END" if constraint.at_most != 0 else "start: TEXT_END"
    return [start, "ANY: /(?s:.*)/", f"TEXT_END: ANY & ~(ANY ({no_trigger}) ANY)"]


def _joined(constraint: Constraint) -> str:
    """`tag (SEP tag)...` with between at_least and at_most tags."""
    sep = f"{_literal(constraint.separator)} " if constraint.separator else ""
    high = None if constraint.at_most is None else constraint.at_most - 1
    rest = f" ({sep}tag){_repeat(max(constraint.at_least - 1, 0), high)}" if high != 0 else ""
    return f"(tag{rest})?" if constraint.at_least == 0 else f"tag{rest}"


def _repeat(low: int, high: int | None) -> str:
    if high is None:
        return "*" if low == 0 else ("+" if low == 1 else f"{{{low},}}")
    return f"{{{low},{high}}}"


def _body(index: int, tag: Tag, begin: str) -> str:
    parts = [_literal(begin) if begin else "", f"@args_{index}", _literal(tag.end) if tag.end else ""]
    return " ".join(p for p in parts if p)


def _trigger(tag: Tag, triggers: tuple[str, ...]) -> str:
    """The longest trigger `tag.begin` starts with: where the free text ends and this tag begins."""
    matching = [t for t in triggers if t and tag.begin.startswith(t)]
    if not matching:
        raise ValueError(f"no trigger starts the tag {tag.begin[:60]!r} (triggers: {list(triggers)})")
    return max(matching, key=len)


def _with_options(schema: dict | bool) -> dict:
    """`schema` with our JSON options; llguidance reads them from a sub-grammar's top-level "x-guidance"
    (check_schema refuses a client's own)."""
    base = {} if schema is True else closed(schema)
    return {**base, "x-guidance": JSON_OPTIONS}


def _literal(text: str) -> str:
    """A Lark string literal: JSON's escapes, which llguidance's Lark reads; non-ASCII kept as UTF-8."""
    return json.dumps(text, ensure_ascii=False)

"""Which JSON Schemas we accept: exactly those llguidance enforces, and nothing it would silently ignore.

A schema is either enforced exactly or refused with `SchemaRefused`, naming the keyword and where
it is (a JSON Pointer). `check_schema` runs before anything is evaluated and needs no vocabulary.

It works in two passes:
1. Our walk, which knows JSON Schema's structure, refuses with a path:
   - keywords llguidance does not implement (`REFUSED`; measured on llguidance 1.9.1, each one
     refused by the library itself in tests/unit/test_constraint_schema.py);
   - keywords it does not know at all, such as OpenAPI's `nullable`: a JSON Schema validator
     ignores them, and so does the library, so the client's intent would silently be lost.
     Annotations (`title`, `description`...) and `x-` extensions are fine, except `x-guidance`,
     which is llguidance's own options and would let a client switch enforcement off;
   - a `format` or `pattern` the library cannot enforce (asked of the library, so the answer is
     its own), a `$ref` that is not local (`#...`), a `$schema` it does not know;
   - nesting past `MAX_DEPTH`, and a schema over `MAX_SCHEMA_BYTES`.
2. The library compiles the schema (without a vocabulary): what it still refuses (a `$ref` to
   nothing, a `oneOf` whose branches may overlap, min > max...) is refused, with the keyword found
   in its message; its message does not say where.

Recursive `$ref`s are accepted: llguidance follows them (a tree of nodes generates and validates).
"""

from __future__ import annotations

import functools
import re

import llguidance
import orjson

from errors import SchemaRefused

# 256 KiB of compact JSON. The request body may be 4 MB, but a schema is checked, then compiled on
# the engine's thread before the first token (then cached). Measured (bench/decode_masks.py): a
# 242 KB schema of 400 objects with enums and patterns takes 0.35-1.2 s on a busy 2-core machine,
# so this keeps a new schema's cost near a second; real schemas (big tool sets, OpenAPI-derived
# models) are tens of KB.
MAX_SCHEMA_BYTES = 256 * 1024
# Subschemas inside subschemas (each `properties`/`items`/`anyOf`... step is one level), and the
# nesting of a `const`/`enum`/`default`/`examples` value. 32 is far beyond hand-written and
# generated schemas (pydantic's nested models use `$ref`, one level each) and keeps the library
# far from its JSON parser's recursion limit of 128.
MAX_DEPTH = 32

# Keywords llguidance implements (its json/schema.rs IMPLEMENTED).
ENFORCED = frozenset({
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems",
    "properties", "additionalProperties", "patternProperties", "required", "minProperties", "maxProperties",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
})
# Metadata and annotations: they never constrain the output.
ANNOTATIONS = frozenset({
    "$schema", "$id", "id", "$anchor", "$defs", "definitions", "$comment", "title", "description",
    "default", "examples", "deprecated", "readOnly", "writeOnly", "contentEncoding", "contentMediaType",
    "contentSchema", "$vocabulary",
    "discriminator",  # OpenAPI's hint beside a oneOf; the oneOf and its consts do the enforcing
})
_NOT_IMPLEMENTED = "the constraint library does not implement it"
REFUSED = {
    **dict.fromkeys(["not", "if", "then", "else", "dependentSchemas", "dependentRequired", "dependencies",
                     "uniqueItems", "contains", "minContains", "maxContains", "propertyNames",
                     "unevaluatedProperties", "unevaluatedItems"], _NOT_IMPLEMENTED),
    **dict.fromkeys(["$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor"],
                    "dynamic references are not supported; use $ref to $defs"),
    "x-guidance": "it is the constraint library's own option block, not part of the schema",
}
DRAFTS = {  # $schema (without a trailing '#') -> year, for the keywords later drafts added
    "https://json-schema.org/draft/2020-12/schema": 2020, "https://json-schema.org/draft/2019-09/schema": 2019,
    "http://json-schema.org/draft-07/schema": 2018, "http://json-schema.org/draft-06/schema": 2017,
    "http://json-schema.org/draft-04/schema": 2013,
}
_SINCE = {"const": 2017, "prefixItems": 2019}  # earlier drafts ignore them: refused there
_ONE_SCHEMA = ("additionalProperties", "additionalItems", "items")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_DATA = ("const", "enum", "default", "examples")
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
# Options for every JSON grammar (models/native/grammar.py): never lenient, oneOf never coerced;
# `\u00e9`-style escapes allowed in strings, as json.dumps writes them by default. Whitespace: at
# most one line break and 32 spaces or tabs between two tokens of the JSON (enough to pretty-print
# 8 levels deep with 4 spaces); unbounded, a small model can emit blank lines until max_tokens.
WHITESPACE = r"[ \t]{1,32}|[ \t]{0,32}\r?\n[ \t]{0,32}"
JSON_OPTIONS = {"whitespace_pattern": WHITESPACE, "lenient": False, "coerce_one_of": False,
                "json_allow_general_unicode_escapes": True}
_ALL_KEYWORDS = ENFORCED | ANNOTATIONS | REFUSED.keys()
_PLAIN_ANNOTATIONS = ANNOTATIONS - set(_DATA)


def check_schema(schema: object, *, param: str | None = None) -> None:
    """Raise `SchemaRefused` (with `param`, e.g. "response_format.json_schema.schema") unless
    llguidance can enforce `schema` exactly."""
    try:
        _check_size(schema)
        if not isinstance(schema, (dict, bool)):
            raise SchemaRefused(f"a JSON Schema is an object or a boolean, not {_json_type(schema)}")
        if schema is False:
            raise SchemaRefused("the schema false allows no value at all")
        draft = _draft(schema)
        _walk(schema, "", "", 0, draft)
        _check_with_library(schema)
    except SchemaRefused as refused:
        refused.param = param
        raise


def grammar_for_schema(schema: dict | bool) -> str:
    """llguidance's grammar for `schema` with our options (the one way JSON grammars are made)."""
    if schema is True:  # the library sets options on an object only; `true` and `{}` mean the same
        schema = {}
    return llguidance.LLMatcher.grammar_from_json_schema(orjson.dumps(closed(schema)).decode(), overrides=JSON_OPTIONS)


def closed(schema: object, *, in_all_of: bool = False) -> object:
    """`schema` where an object that lists its `properties` and says nothing of others gets no others.

    JSON Schema allows unlisted properties by default, but a model given that freedom fills it: SmolLM2
    wrote `"type"`, `"required"` and `"default"` keys after a tool's two arguments until max_tokens
    (LangChain's tool schemas leave `additionalProperties` out). The output still validates against
    the schema as given; it is only never one with extra keys. An object inside `allOf` stays open:
    its properties may be another branch's."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict) and not in_all_of and not (
            {"additionalProperties", "patternProperties", "unevaluatedProperties"} & out.keys()):
        out["additionalProperties"] = False
    for key in _ONE_SCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = closed(out[key])
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed(sub, in_all_of=key == "allOf") for sub in out[key]]
    return out


def library_refusal(message: str, path: str = "", used: frozenset[str] = frozenset()) -> SchemaRefused:
    """A SchemaRefused for an error message of llguidance's, naming the keyword the message is about
    (of the keywords `used` in the schema, when given: "min/maxProperties" means the one it has)."""
    reason = message.split("\n<state>")[0].strip()
    if reason.startswith("oneOf constraints are not supported"):  # its advice names an option of its own
        return SchemaRefused("its branches may overlap, and 'exactly one of' can only be enforced "
                             "when they provably cannot (use anyOf if any one will do)", keyword="oneOf", path=path)
    if reason.startswith("NoExtension"):  # the parser's stop reason: not even a first byte fits
        return SchemaRefused("it allows no value at all (a $ref that only leads to itself?)",
                             keyword="$ref" if "$ref" in used else "", path=path)
    if "regex parse error" in reason:
        keyword = "pattern"
    elif reason.startswith(("Pointer ", "Resource ")) or "$ref" in reason:
        keyword = "$ref"
    elif reason.startswith("Unknown format"):
        keyword = "format"
    else:
        found = []
        for match in re.finditer(r"(min/max)?(\$?[A-Za-z]+)", reason):
            names = [f"min{match[2]}", f"max{match[2]}"] if match[1] else [match[2]]
            found += [(match.start(), n) for n in names if n in _ALL_KEYWORDS and (not used or n in used)]
        keyword = min(found)[1] if found else ""
    return SchemaRefused(reason, keyword=keyword, path=path)


def _check_size(schema: object) -> None:
    try:
        size = len(orjson.dumps(schema))
    except orjson.JSONEncodeError as exc:  # nested past orjson's limit of 255, an integer past 64 bits...
        raise SchemaRefused(f"it is not JSON the constraint library can read ({exc})") from None
    if size > MAX_SCHEMA_BYTES:
        raise SchemaRefused(f"it is {size} bytes of JSON; the limit is {MAX_SCHEMA_BYTES} bytes")


def _draft(schema: dict | bool) -> int:
    uri = schema.get("$schema") if isinstance(schema, dict) else None
    if uri is None:
        return 2020
    if not isinstance(uri, str) or uri.rstrip("#") not in DRAFTS:
        raise SchemaRefused(f"unknown draft {str(uri)[:100]!r}; known: {', '.join(DRAFTS)}", keyword="$schema")
    return DRAFTS[uri.rstrip("#")]


def _walk(node: object, path: str, parent: str, depth: int, draft: int) -> None:
    """Check subschema `node` at `path`, which hangs from keyword `parent` ("" at the root)."""
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise SchemaRefused(f"a subschema is an object or a boolean, not {_json_type(node)}", keyword=parent, path=path)
    if depth > MAX_DEPTH:
        raise SchemaRefused(f"subschemas nest deeper than {MAX_DEPTH} levels", keyword=parent, path=path)
    for key, value in node.items():
        _check_keyword(key, value, path, draft)
        for child_path, child in _subschemas(key, value, path):
            _walk(child, child_path, key, depth + 1, draft)


def _check_keyword(key: str, value: object, path: str, draft: int) -> None:
    if key in REFUSED:
        raise SchemaRefused(REFUSED[key], keyword=key, path=path or "/")
    if key.startswith("x-") or key in _PLAIN_ANNOTATIONS:
        return
    if key not in ENFORCED and key not in _DATA:
        hint = ' (for a nullable value, write "type": [..., "null"])' if key == "nullable" else ""
        raise SchemaRefused("not a JSON Schema keyword the constraint library knows: "
                            f"it would be ignored, not enforced{hint}", keyword=key, path=path or "/")
    if _SINCE.get(key, 0) > draft:
        raise SchemaRefused("the schema's $schema draft predates this keyword, so it would be ignored",
                            keyword=key, path=path or "/")
    if key in _DATA and _depth(value) > MAX_DEPTH:
        raise SchemaRefused(f"its value nests deeper than {MAX_DEPTH} levels", keyword=key, path=path or "/")
    _check_value(key, value, path or "/")


def _check_value(key: str, value: object, path: str) -> None:
    if key in ("format", "pattern", "$ref") and not isinstance(value, str):
        raise SchemaRefused(f"its value must be a string, not {_json_type(value)}", keyword=key, path=path)
    if key == "format" and not _format_supported(value):
        raise SchemaRefused(f"the constraint library does not implement format {value[:100]!r}", keyword=key, path=path)
    if key == "pattern" and (error := _pattern_error(value)):
        raise SchemaRefused(error, keyword=key, path=path)
    if key == "patternProperties" and isinstance(value, dict):
        for pattern in value:
            if error := _pattern_error(pattern):
                raise SchemaRefused(error, keyword=key, path=path)
    if key == "$ref" and not value.startswith("#"):
        raise SchemaRefused(f"only local references ('#...') can be followed, not {value[:100]!r}", keyword=key, path=path)
    if key == "enum" and value == []:
        raise SchemaRefused("an empty enum allows no value at all", keyword=key, path=path)
    if key == "type":
        names = value if isinstance(value, list) else [value]
        if not names or any(name not in _TYPES for name in names):
            raise SchemaRefused(f"{orjson.dumps(value).decode()[:100]} is not a type or a non-empty list of types",
                                keyword=key, path=path)


def _subschemas(key: str, value: object, path: str):
    """(path, subschema) for each subschema directly under keyword `key`."""
    here = f"{path}/{_escape(key)}"
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return [(f"{here}/{_escape(name)}", child) for name, child in value.items()]
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [(f"{here}/{i}", child) for i, child in enumerate(value)]
    if key in _ONE_SCHEMA:
        return [(here, value)]
    return []


@functools.lru_cache(maxsize=64)
def _format_supported(name: str) -> bool:
    """Asked of the library: a format it does not implement is an error there (on strings)."""
    return not _library_error({"type": "string", "format": name})


@functools.lru_cache(maxsize=256)
def _pattern_error(pattern: str) -> str:
    """The library's own reason why it cannot compile `pattern` as JSON Schema's (unanchored) pattern; "" if it can."""
    error = _library_error({"type": "string", "pattern": pattern})
    if not error:
        return ""
    # The regex crate's report is a multi-line drawing; its "error: ..." line is the reason.
    reasons = [line.strip()[len("error:"):].strip() for line in error.splitlines() if line.strip().startswith("error:")]
    return f"{pattern[:100]!r}: {reasons[0] if reasons else error}"


def _check_with_library(schema: dict | bool) -> None:
    if error := _library_error(schema):
        raise library_refusal(error, used=_keys(schema))


def _keys(node: object, found: set[str] | None = None) -> frozenset[str]:
    """Every object key in the (already walked, so bounded) schema."""
    found = set() if found is None else found
    if isinstance(node, dict):
        found.update(node)
        for value in node.values():
            _keys(value, found)
    elif isinstance(node, list):
        for value in node:
            _keys(value, found)
    return frozenset(found)


def _library_error(schema: dict | bool) -> str:
    """What the library says of `schema`: its compile error, or an error at the first token (a `$ref`
    loop that never reaches a schema compiles, then allows nothing); "" when it can enforce it.

    The first token is tried on llguidance's built-in tokenizer of single bytes, so no model is needed."""
    matcher = llguidance.LLMatcher(_byte_tokenizer(), grammar_for_schema(schema), log_level=0)
    if not matcher.is_error():
        matcher.compute_bitmask()
    if matcher.is_error():
        return matcher.get_error()
    # Without `lenient` there are no warnings; if a later version adds some, refuse rather than guess.
    return "; ".join(matcher.get_grammar_warnings())


@functools.lru_cache(maxsize=1)
def _byte_tokenizer() -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer("byte")


def _depth(value: object) -> int:
    """How deeply JSON `value` nests, counted up to MAX_DEPTH + 1 (no deeper: the input may be hostile)."""
    level, frontier = 0, [value]
    while frontier and level <= MAX_DEPTH:
        frontier = [c for v in frontier if isinstance(v, (dict, list)) for c in (v.values() if isinstance(v, dict) else v)]
        level += 1
    return level if frontier else level - 1


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)

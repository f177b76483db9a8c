"""Placeholder until the token-mask library lands: every schema is refused, never generated freely."""


class SchemaRefused(ValueError):
    pass


def check_schema(schema: object) -> None:
    raise SchemaRefused("structured output is not available yet")

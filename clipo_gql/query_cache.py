"""Each distinct query text is parsed once: clients send the same few texts over and over.

Strawberry's `ParserCache` would do, but it parses inside its hook, where a syntax error
escapes Strawberry's error handling and reaches the client without `extensions.code`. Here a
text that does not parse is left to Strawberry's own parse, which reports it as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from graphql import GraphQLError, parse
from strawberry.extensions import SchemaExtension

# Distinct texts remembered. A stranger's stream of unique texts only evicts: bounded memory.
QUERY_CACHE_SIZE = 256

_parse = lru_cache(maxsize=QUERY_CACHE_SIZE)(parse)


class ParseOnce(SchemaExtension):
    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query:
            try:
                context.graphql_document = _parse(context.query, **context.parse_options)
            except GraphQLError:
                pass  # not cached: parsed again below, and refused with a code
        yield

"""Counts GraphQL operations by type and outcome, over HTTP and websockets alike."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from clipo_gql.errors import CODES
from clipo_gql.ops.metrics import GRAPHQL_OPERATIONS


class OperationMetrics(SchemaExtension):
    """Listed before `ErrorCodes`, so it runs after that has given every error its code. A
    subscription is counted once, when it ends."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except Exception:  # no document (a syntax error) or no such operation
            kind = "unknown"
        errors = getattr(context.result, "errors", None) or context.pre_execution_errors
        code = "OK"
        if errors:
            found = (errors[0].extensions or {}).get("code")
            code = found if found in CODES else "INTERNAL"
        GRAPHQL_OPERATIONS.labels(kind, code).inc()

"""Validation rules that bound what one GraphQL document may ask for.

Strawberry's QueryDepthLimiter and MaxAliasesLimiter walk every fragment spread again wherever
it is used, so a document of a few hundred bytes whose fragments each spread the next one
twice costs 2**n walks, on the event loop (the depth limiter also crashes on `{}` and on
undefined fragments). These rules look at each fragment once.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)


def depth_limit(max_depth: int) -> type[ValidationRule]:
    """A rule refusing operations whose fields nest deeper than `max_depth` below the root.

    `{ videos { edges { node { id } } } }` has depth 3. Introspection fields (`__schema`,
    `__type`) are not counted, as in Strawberry's limiter: the token limit bounds them.
    """
    cap = max_depth + 1

    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.fragment_depths: dict[str, int] = {}
            self.measuring: set[str] = set()

        def depth(self, selection_set: SelectionSetNode, budget: int) -> int:
            """Levels of fields below `selection_set`, counted up to `budget` at most."""
            deepest = 0
            for selection in selection_set.selections:
                if deepest >= budget:
                    break
                if isinstance(selection, FieldNode):
                    if selection.selection_set and not selection.name.value.startswith("__"):
                        deepest = max(deepest, 1 + self.depth(selection.selection_set, budget - 1))
                elif isinstance(selection, InlineFragmentNode):
                    deepest = max(deepest, self.depth(selection.selection_set, budget))
                elif isinstance(selection, FragmentSpreadNode):
                    deepest = max(deepest, min(budget, self.fragment_depth(selection)))
            return deepest

        def fragment_depth(self, spread: FragmentSpreadNode) -> int:
            name = spread.name.value
            if name not in self.fragment_depths:
                fragment = self.context.get_fragment(name)
                # Unknown fragments and cycles are other rules' errors: count them as flat.
                if fragment is None or name in self.measuring:
                    return 0
                self.measuring.add(name)
                self.fragment_depths[name] = self.depth(fragment.selection_set, cap)
                self.measuring.discard(name)
            return self.fragment_depths[name]

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            if self.depth(node.selection_set, cap) > max_depth:
                name = node.name.value if node.name else "anonymous"
                self.report_error(
                    GraphQLError(f"'{name}' exceeds maximum operation depth of {max_depth}", node)
                )

        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
            # graphql-core parses `{}`; the spec's grammar does not allow it.
            if not node.selections:
                self.report_error(GraphQLError("Selection sets may not be empty", node))

    return DepthLimit


def alias_limit(max_aliases: int) -> type[ValidationRule]:
    """A rule refusing documents with more than `max_aliases` aliased fields.

    Each alias is counted once where it is written: execution, too, visits a fragment once
    per selection set however often it is spread.
    """

    class AliasLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_field(self, node: FieldNode, *_: Any) -> None:
            if node.alias is None:
                return
            self.count += 1
            if self.count == max_aliases + 1:
                self.report_error(
                    GraphQLError(
                        f"More than {max_aliases} aliases found; the limit is {max_aliases}"
                    )
                )

    return AliasLimit

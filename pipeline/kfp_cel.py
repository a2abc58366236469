"""The subset of CEL that TFX writes into a KFP task's `triggerPolicy.condition`, parsed and evaluated.

TFX (kubeflow/v2/compiler_utils.placeholder_to_cel) emits literals (numbers, 'strings'), member access on
`inputs.artifacts['key'].artifacts[i]` (`.metadata['name']`, `.uri`), `inputs.parameter_values['key']`,
`+`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `!`, `&&`, `||` and parentheses. Like CEL, comparisons between a number
and a string are errors, not false, and the whole condition must be a bool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

INPUT_GROUPS = ("artifacts", "parameter_values")
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<string>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!+\-.\[\]()]))"
)
_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
_LITERAL_NAMES = {"true": True, "false": False, "null": None}


class ConditionError(ValueError):
    """A condition that cannot be parsed or evaluated; the message says where and why."""


@dataclass(frozen=True)
class Condition:
    """A parsed condition: its text, syntax tree and the inputs it reads, as (group, key) pairs."""

    text: str
    tree: tuple
    references: frozenset[tuple[str, str]]

    def evaluate(self, artifacts: dict[str, list[dict]], parameter_values: dict[str, Any]) -> bool:
        """The condition's value for a task's inputs: artifacts as RuntimeArtifact dicts (uri, metadata)."""
        inputs = {"artifacts": {k: {"artifacts": v} for k, v in artifacts.items()}}
        inputs["parameter_values"] = parameter_values
        value = _evaluate(self.tree, inputs)
        if not isinstance(value, bool):
            raise ConditionError(f"{self.text!r} is {value!r}, not a bool")
        return value


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionError(f"cannot parse {text!r} at {text[position:].strip()[:20]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over CEL's precedence: || < && < comparisons < + < unary < member access."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0
        self.references: set[tuple[str, str]] = set()

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise ConditionError(f"cannot parse {self.text!r}: it ends early")
        token = self.tokens[self.position]
        if expected is not None and token[1] != expected:
            raise ConditionError(f"cannot parse {self.text!r}: expected {expected!r}, found {token[1]!r}")
        self.position += 1
        return token

    def parse(self) -> tuple:
        tree = self.disjunction()
        if self.position != len(self.tokens):
            raise ConditionError(f"cannot parse {self.text!r}: unexpected {self.peek()!r}")
        return tree

    def binary(self, operators: tuple[str, ...], operand) -> tuple:
        tree = operand()
        while self.peek() in operators:
            operator = self.take()[1]
            tree = ("binary", operator, tree, operand())
        return tree

    def disjunction(self) -> tuple:
        return self.binary(("||",), self.conjunction)

    def conjunction(self) -> tuple:
        return self.binary(("&&",), self.comparison)

    def comparison(self) -> tuple:
        tree = self.addition()
        if self.peek() in _COMPARISONS:
            operator = self.take()[1]
            tree = ("binary", operator, tree, self.addition())
            if self.peek() in _COMPARISONS:
                raise ConditionError(f"cannot parse {self.text!r}: chained comparison")
        return tree

    def addition(self) -> tuple:
        return self.binary(("+", "-"), self.unary)

    def unary(self) -> tuple:
        if self.peek() in ("!", "-"):
            operator = self.take()[1]
            return ("unary", operator, self.unary())
        return self.member()

    def member(self) -> tuple:
        tree = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                kind, name = self.take()
                if kind != "name":
                    raise ConditionError(f"cannot parse {self.text!r}: expected a field name after '.'")
                tree = ("field", tree, name)
            else:
                index = self.disjunction()
                self.take("]")
                tree = ("index", tree, index)
        return tree

    def input_reference(self) -> tuple:
        """`inputs.artifacts['key']` or `inputs.parameter_values['key']`, the only ways TFX reads inputs."""
        self.take(".")
        group = self.take()[1]
        self.take("[")
        kind, key = self.take()
        self.take("]")
        if group not in INPUT_GROUPS or kind != "string":
            raise ConditionError(
                f"cannot parse {self.text!r}: inputs are read as inputs.artifacts['key'] or "
                "inputs.parameter_values['key']"
            )
        reference = (group, _unquote(key))
        self.references.add(reference)
        return ("input", *reference)

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "number":
            return ("literal", float(value) if any(c in value for c in ".eE") else int(value))
        if kind == "string":
            return ("literal", _unquote(value))
        if kind == "name" and value in _LITERAL_NAMES:
            return ("literal", _LITERAL_NAMES[value])
        if kind == "name" and value == "inputs":
            return self.input_reference()
        if value == "(":
            tree = self.disjunction()
            self.take(")")
            return tree
        raise ConditionError(f"cannot parse {self.text!r}: unexpected {value!r}")


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def parse_condition(text: str) -> Condition:
    """Parse a trigger condition; ConditionError for anything outside the subset."""
    parser = _Parser(text)
    return Condition(text, parser.parse(), frozenset(parser.references))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(left: Any, right: Any) -> bool:
    return (_number(left) and _number(right)) or type(left) is type(right)


def _evaluate(tree: tuple, inputs: dict) -> Any:
    kind = tree[0]
    if kind == "literal":
        return tree[1]
    if kind == "input":
        _, group, key = tree
        if key not in inputs[group]:
            raise ConditionError(f"inputs.{group}[{key!r}] has no value")
        return inputs[group][key]
    if kind == "field":
        target = _evaluate(tree[1], inputs)
        if not isinstance(target, dict) or tree[2] not in target:
            raise ConditionError(f"no field {tree[2]!r}")
        return target[tree[2]]
    if kind == "index":
        target, index = _evaluate(tree[1], inputs), _evaluate(tree[2], inputs)
        if isinstance(target, list) and _number(index) and float(index).is_integer():
            if not 0 <= index < len(target):
                raise ConditionError(f"index {int(index)} out of range (list of {len(target)})")
            return target[int(index)]
        if isinstance(target, dict) and isinstance(index, str):
            if index not in target:
                raise ConditionError(f"no key {index!r}")
            return target[index]
        raise ConditionError(f"cannot index {type(target).__name__} with {index!r}")
    if kind == "unary":
        value = _evaluate(tree[2], inputs)
        if tree[1] == "!" and isinstance(value, bool):
            return not value
        if tree[1] == "-" and _number(value):
            return -value
        raise ConditionError(f"no overload of {tree[1]!r} for {value!r}")
    _, operator, left_tree, right_tree = tree
    left = _evaluate(left_tree, inputs)
    if operator in ("&&", "||"):
        if not isinstance(left, bool):
            raise ConditionError(f"{operator!r} on {left!r}, not a bool")
        if left is (operator == "||"):
            return left
        right = _evaluate(right_tree, inputs)
        if not isinstance(right, bool):
            raise ConditionError(f"{operator!r} on {right!r}, not a bool")
        return right
    right = _evaluate(right_tree, inputs)
    if not _same_kind(left, right) or (operator != "==" and operator != "!=" and left is None):
        raise ConditionError(f"no overload of {operator!r} for {left!r} and {right!r}")
    if operator == "+":
        if isinstance(left, bool) or not isinstance(left, int | float | str):
            raise ConditionError(f"no overload of '+' for {left!r} and {right!r}")
        return left + right
    if operator == "-":
        if not _number(left):
            raise ConditionError(f"no overload of '-' for {left!r} and {right!r}")
        return left - right
    if operator in ("<", "<=", ">", ">=") and not (_number(left) or isinstance(left, str)):
        raise ConditionError(f"no overload of {operator!r} for {left!r} and {right!r}")
    return {
        "==": lambda: left == right,
        "!=": lambda: left != right,
        "<": lambda: left < right,
        "<=": lambda: left <= right,
        ">": lambda: left > right,
        ">=": lambda: left >= right,
    }[operator]()

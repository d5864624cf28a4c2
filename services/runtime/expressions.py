"""`when` conditions: a small expression language, parsed at load, evaluated by lookup.

The grammar (whitespace between tokens is free)::

    expression := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand)?
    operand    := literal | path | "(" expression ")" | "[" [literal ("," literal)*] "]"
    literal    := number | string | "true" | "false" | "null"
    path       := root ("." name | "[" digits "]")*      root: inputs, state, ctx, session

Numbers are decimal (`3`, `-0.25`); strings are single- or double-quoted with `\\`, `\\'` and
`\\"` escapes. There are no calls, no attribute access beyond paths into the run's values, no
arithmetic, and nothing is ever handed to `eval`.

Meaning: `==`/`!=` compare JSON values (a boolean is not a number); `<` `<=` `>` `>=` compare
two numbers or two strings, anything else is an error; `x in list` is membership, `s in text`
a substring test, `k in object` a key test; `and`/`or` short-circuit; a path that is absent
is `null`. The condition holds when its value is truthy (not null, false, 0, "", [] or {}).

Bounds: MAX_CHARS characters, MAX_DEPTH nested operators or brackets and MAX_NODES nodes per
expression, so parsing is linear and evaluation visits each node once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from services.runtime.templates import ROOTS, Reference, TemplateError

MAX_CHARS = 1000
MAX_DEPTH = 16
MAX_NODES = 200


class ExpressionError(ValueError):
    """An expression that cannot be parsed, or cannot be evaluated on the values it meets."""


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>-?\d{1,15}(?:\.\d{1,15})?)(?![\w.])
    | (?P<string>"(?:[^"\\]|\\["\\])*"|'(?:[^'\\]|\\['\\])*')
    | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d{1,6}\])*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_COMPARISONS = {("op", o) for o in ("==", "!=", "<", "<=", ">", ">=")} | {("keyword", "in")}
_LITERALS = {"true": True, "false": False, "null": None}
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, op, word, keyword, end
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            tokens.append(_Token("end", "", position))
            return tokens
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"unexpected {text[position : position + 10]!r} at {position}")
        group = match.lastgroup or ""
        value = match.group(group)
        kind = "keyword" if group == "word" and value in _KEYWORDS else group
        tokens.append(_Token(kind, value, match.start(group)))
        position = match.end()


# Nodes are tuples evaluated by `_evaluate`: ("lit", value), ("path", Reference),
# ("list", [values]), ("not", node), ("and"/"or", [nodes]), ("cmp", op, left, right).
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str, roots: Collection[str]) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.roots = roots
        self.nodes = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def expect(self, kind: str, text: str) -> None:
        token = self.take()
        if token.kind != kind or token.text != text:
            raise ExpressionError(f"expected {text!r} at {token.position}, got {_shown(token)}")

    def node(self, *parts: Any) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"more than {MAX_NODES} terms")
        return parts

    def nested(self, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH}")
        try:
            return parse()
        finally:
            self.depth -= 1

    def expression(self) -> Node:
        return self.nested(self.disjunction)

    def disjunction(self) -> Node:
        items = [self.conjunction()]
        while self.at("keyword", "or"):
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else self.node("or", items)

    def conjunction(self) -> Node:
        items = [self.negation()]
        while self.at("keyword", "and"):
            self.take()
            items.append(self.negation())
        return items[0] if len(items) == 1 else self.node("and", items)

    def negation(self) -> Node:
        if self.at("keyword", "not"):
            self.take()
            return self.node("not", self.nested(self.negation))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek()
        if (token.kind, token.text) in _COMPARISONS:
            op = self.take().text
        elif token.kind == "keyword" and token.text == "not":
            self.take()
            self.expect("keyword", "in")
            op = "not in"
        else:
            return left
        return self.node("cmp", op, left, self.operand())

    def operand(self) -> Node:
        token = self.take()
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect("op", ")")
            return inner
        if token.kind == "op" and token.text == "[":
            values: list[Any] = []
            if not self.at("op", "]"):
                values.append(self.literal(self.take()))
                while self.at("op", ","):
                    self.take()
                    values.append(self.literal(self.take()))
            self.expect("op", "]")
            return self.node("list", values)
        if token.kind == "word":
            try:
                return self.node("path", Reference.parse(token.text, self.roots))
            except TemplateError as error:
                raise ExpressionError(str(error)) from None
        return self.node("lit", self.literal(token))

    def literal(self, token: _Token) -> Any:
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "string":
            return _ESCAPE.sub(r"\1", token.text[1:-1])
        if token.kind == "keyword" and token.text in _LITERALS:
            return _LITERALS[token.text]
        raise ExpressionError(f"expected a value at {token.position}, got {_shown(token)}")


def _shown(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


@dataclass(frozen=True)
class Expression:
    """A parsed `when` condition."""

    source: str
    tree: Node

    @property
    def references(self) -> tuple[Reference, ...]:
        """Every path the expression reads."""
        found: list[Reference] = []
        _collect(self.tree, found)
        return tuple(found)

    def holds(self, scope: Mapping[str, Any]) -> bool:
        """Whether the condition is truthy in `scope`; ExpressionError when it compares what
        cannot be compared."""
        return _truthy(_evaluate(self.tree, scope))


def parse_expression(text: str, roots: Collection[str] = ROOTS) -> Expression:
    """Parse `text`; ExpressionError says where and what is wrong."""
    if not isinstance(text, str):
        raise ExpressionError("a condition is a string")
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"{len(text)} characters; a condition may have {MAX_CHARS}")
    if not text.strip():
        raise ExpressionError("empty condition")
    parser = _Parser(text, roots)
    tree = parser.expression()
    token = parser.peek()
    if token.kind != "end":
        raise ExpressionError(f"unexpected {_shown(token)} at {token.position}")
    return Expression(source=text, tree=tree)


def _collect(node: Node, found: list[Reference]) -> None:
    kind = node[0]
    if kind == "path":
        found.append(node[1])
    elif kind == "not":
        _collect(node[1], found)
    elif kind in ("and", "or"):
        for item in node[1]:
            _collect(item, found)
    elif kind == "cmp":
        _collect(node[2], found)
        _collect(node[3], found)


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | tuple | Mapping):
        return bool(value)
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) or _is_number(right):
        return _is_number(left) and _is_number(right) and left == right
    return bool(left == right)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return "an object"


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("in", "not in"):
        if isinstance(right, list | tuple):
            found = any(_equal(left, item) for item in right)
        elif isinstance(right, str | Mapping) and isinstance(left, str):
            found = left in right  # a substring, or a key
        else:
            raise ExpressionError(f"cannot test {_kind(left)} in {_kind(right)}")
        return found if op == "in" else not found
    if not (
        (_is_number(left) and _is_number(right))
        or (isinstance(left, str) and isinstance(right, str))
    ):
        raise ExpressionError(f"cannot order {_kind(left)} and {_kind(right)} with {op}")
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _evaluate(node: Node, scope: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        return node[1].resolve(scope)
    if kind == "list":
        return node[1]
    if kind == "not":
        return not _truthy(_evaluate(node[1], scope))
    if kind == "and":
        return all(_truthy(_evaluate(item, scope)) for item in node[1])
    if kind == "or":
        return any(_truthy(_evaluate(item, scope)) for item in node[1])
    _, op, left, right = node
    return _compare(op, _evaluate(left, scope), _evaluate(right, scope))

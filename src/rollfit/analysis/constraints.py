"""Safe arithmetic expressions over labels: objectives and constraints for ``optimize``.

Users write ``--constraint "gait_stride*gait_cadence=1.2"`` or ``--target "cot+0.1*effort"``.
These strings are parsed here by a small tokenizer and a recursive-descent parser -- never
by ``eval`` -- into a tree of a handful of node kinds (number, name, unary minus, + - * / ^),
so no text can run code. The tree compiles to a function of named tensors built from torch
operations, so objectives and constraints are differentiable w.r.t. the inputs.

Grammar (``^`` and ``**`` are the same operator; it binds tighter than unary minus on its
left and is right-associative, as in Python: ``-a^2 = -(a^2)``, ``2^3^2 = 2^9``)::

    constraint := expr ('=' | '==' | '<=' | '>=' | '<' | '>') expr
    expr       := term (('+' | '-') term)*
    term       := unary (('*' | '/') unary)*
    unary      := ('+' | '-') unary | power
    power      := atom (('^' | '**') unary)?
    atom       := NUMBER | NAME | QUOTED_NAME | '(' expr ')'

A NAME is ``[A-Za-z_][A-Za-z0-9_]*``; a label with other characters (``metabolic/cot/MA/mean``)
is written in quotes or backticks. Errors are ``ExpressionError`` (a ``ConfigError``): one
line giving the column; its ``caret`` shows the expression with a caret under the problem.

Limits, so no text can hang or crash the parser: at most ``MAX_CHARS`` characters and
``MAX_TOKENS`` tokens, ``MAX_DEPTH`` levels of nesting (parentheses, signs, powers), constant
exponents of at most ``MAX_EXPONENT`` in size. Constant parts are folded at parse time, so
``1/0``, ``0^-1``, ``(-8)^(1/3)`` or an overflow are errors before anything runs, and a
constraint without any label (``1=2``) is refused.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from ..errors import ConfigError, did_you_mean, listing

Value = Union[torch.Tensor, float]
Env = Mapping[str, Value]
COMPARATORS = ("==", "<=", ">=", "=", "<", ">")
MAX_CHARS = 2000
MAX_TOKENS = 500
MAX_DEPTH = 100
MAX_EXPONENT = 100
_SHOWN = 70  # characters of a long expression shown on each side of the caret
_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>"[^"]*"|'[^']*'|`[^`]*`)
  | (?P<op>\*\*|==|<=|>=|[-+*/^()=<>])
""", re.VERBOSE)


class ExpressionError(ConfigError):
    """A target or constraint expression that cannot be parsed or names an unknown label.

    The message is one line in the error grammar, with the 1-based ``column``; ``caret``
    shows the expression (a window of it when long) with a caret under that column, for
    interactive use.
    """

    def __init__(self, where: str, text: str, column: int, expected: str, got: str, hint: str = ""):
        self.where, self.text, self.column = where, text, column
        self.reason = f"{where}, column {column}: expected {expected}, but got {got}{hint}"
        super().__init__(self.reason)

    @property
    def caret(self) -> str:
        """Two lines: the expression around ``column`` and a caret under it."""
        lo = max(0, self.column - 1 - _SHOWN)
        end = self.column - 1 + _SHOWN
        shown = ("..." if lo else "") + self.text[lo:end] + ("..." if len(self.text) > end else "")
        return f"    {shown}\n    {' ' * (self.column - 1 - lo + (3 if lo else 0))}^"


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "op" or "end"
    text: str
    value: object  # float for numbers, the label for names, the operator text for ops
    pos: int  # 0-based offset in the expression


def tokenize(text: str, where: str = "expression") -> list[Token]:
    """Split ``text`` into tokens (ending with an ``end`` token); unknown characters are errors."""
    if len(text) > MAX_CHARS:
        raise ExpressionError(where, text, MAX_CHARS + 1, f"an expression of at most {MAX_CHARS} characters",
                              f"{len(text)}")
    tokens, pos = [], 0
    while pos < len(text):
        if len(tokens) >= MAX_TOKENS:
            raise ExpressionError(where, text, pos + 1, f"an expression of at most {MAX_TOKENS} numbers, labels "
                                  "and operators", "more")
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ExpressionError(where, text, pos + 1, "a number, a label, an operator or a parenthesis",
                                  f"'{text[pos]}'")
        kind, tok = m.lastgroup, m.group()
        if kind == "number":
            if not math.isfinite(float(tok)):
                raise ExpressionError(where, text, pos + 1, "a finite number", f"'{tok}'")
            tokens.append(Token("number", tok, float(tok), pos))
        elif kind == "name":
            tokens.append(Token("name", tok, tok, pos))
        elif kind == "quoted":
            tokens.append(Token("name", tok, tok[1:-1], pos))
        elif kind == "op":
            tokens.append(Token("op", tok, "^" if tok == "**" else ("==" if tok == "=" else tok), pos))
        pos = m.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


# ----------------------------------------------------------------------------- the tree
@dataclass(frozen=True)
class Node:
    """A node of an expression tree: ``num`` (value), ``name`` (label), ``neg`` (a), or a
    binary operator ``+ - * / ^`` (a, b). ``pos`` is the 0-based offset of its first token."""

    kind: str
    pos: int
    value: object = None
    a: Optional["Node"] = None
    b: Optional["Node"] = None


def _div(x: Value, y: Value) -> Value:
    """``x / y``; with plain floats, IEEE results (inf, nan) instead of ZeroDivisionError, as torch gives."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor) or y != 0:
        return x / y
    return math.nan if x == 0 or math.isnan(x) else math.copysign(math.inf, x) * math.copysign(1.0, y)


def _pow(x: Value, y: Value) -> Value:
    """``x ** y``; with plain floats, inf/nan instead of exceptions or complex numbers, as torch gives."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return x ** y
    try:
        value = x ** y
    except (ZeroDivisionError, OverflowError):
        return math.inf
    return math.nan if isinstance(value, complex) else value


_BINARY: dict[str, Callable[[Value, Value], Value]] = {
    "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": _div, "^": _pow,
}


def _short(text: str, n: int = 60) -> str:
    """``text``, or its first ``n`` characters and '...' (error messages name long expressions)."""
    return text if len(text) <= n else text[:n] + "..."


def _describe(tok: Token) -> str:
    return "the end of the expression" if tok.kind == "end" else f"'{tok.text}'"


class _Parser:
    """Recursive descent over a token list, one method per grammar rule."""

    def __init__(self, text: str, where: str, names: Optional[Sequence[str]], name_kind: str):
        self.text, self.where, self.names, self.name_kind = text, where, names, name_kind
        self.tokens, self.i, self.depth = tokenize(text, where), 0, 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, tok: Token, expected: str, hint: str = "") -> ExpressionError:
        return ExpressionError(self.where, self.text, tok.pos + 1, expected, _describe(tok), hint)

    def take(self, *ops: str) -> Optional[Token]:
        """Consume and return the current token if it is one of the operators ``ops``."""
        if self.tok.kind == "op" and self.tok.value in ops:
            self.i += 1
            return self.tokens[self.i - 1]
        return None

    def enter(self, tok: Token) -> None:
        """One level deeper (a parenthesis, a sign or an exponent); bounded, so no RecursionError."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(tok, f"at most {MAX_DEPTH} levels of nesting (parentheses, signs, powers)")

    def expr(self) -> Node:
        node = self.term()
        while (op := self.take("+", "-")) is not None:
            node = Node(op.value, node.pos, a=node, b=self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while (op := self.take("*", "/")) is not None:
            node = Node(op.value, node.pos, a=node, b=self.unary())
        return node

    def unary(self) -> Node:
        if (op := self.take("+", "-")) is not None:
            self.enter(op)
            inner = self.unary()
            self.depth -= 1
            return Node("neg", op.pos, a=inner) if op.value == "-" else inner
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if (op := self.take("^")) is not None:
            self.enter(op)
            exponent = self.unary()
            self.depth -= 1
            return Node("^", base.pos, a=base, b=exponent)
        return base

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return Node("num", tok.pos, value=tok.value)
        if tok.kind == "name":
            self.i += 1
            return Node("name", tok.pos, value=self.check_name(tok))
        if self.take("(") is not None:
            self.enter(tok)
            node = self.expr()
            if self.take(")") is None:
                raise self.fail(self.tok, "')' to close the '(' at column " f"{tok.pos + 1}")
            self.depth -= 1
            return node
        raise self.fail(tok, "a number, a label or '('")

    def check_name(self, tok: Token) -> str:
        """The label of a name token; a name that is not a known label is an error."""
        name = str(tok.value)
        if self.names is not None and name not in self.names:
            hint = did_you_mean(name, self.names) or f"; known: {listing(list(self.names), name)}"
            raise self.fail(tok, f"{self.name_kind}", hint)
        return name

    def end(self, node: Node, expected: str) -> Node:
        """``node`` with its constant parts folded, if the tokens end here."""
        if self.tok.kind != "end":
            raise self.fail(self.tok, expected)
        return self.fold(node)

    def fold(self, node: Node) -> Node:
        """Constant subtrees computed now, with every arithmetic problem an ExpressionError."""
        if node.kind in ("num", "name"):
            return node
        a = self.fold(node.a)  # type: ignore[arg-type]
        if node.kind == "neg":
            return Node("num", node.pos, value=-a.value) if a.kind == "num" else Node("neg", node.pos, a=a)
        b = self.fold(node.b)  # type: ignore[arg-type]
        if node.kind == "^" and b.kind == "num" and abs(b.value) > MAX_EXPONENT:  # type: ignore[arg-type]
            raise self.problem(b, f"an exponent of at most {MAX_EXPONENT} in size", f"{b.value:g}")
        if node.kind == "/" and b.kind == "num" and b.value == 0:
            raise self.problem(node, "a non-zero divisor", "division by zero")
        if a.kind != "num" or b.kind != "num":
            return Node(node.kind, node.pos, a=a, b=b)
        return Node("num", node.pos, value=self.constant(node, float(a.value), float(b.value)))  # type: ignore[arg-type]

    def constant(self, node: Node, x: float, y: float) -> float:
        """``x op y`` for a folded node; division by zero, complex or non-finite results are errors."""
        if node.kind == "^" and x == 0 and y < 0:
            raise self.problem(node, "a non-zero base for a negative power", f"0^{y:g}")
        if node.kind == "^" and x < 0 and not y.is_integer():
            raise self.problem(node, "a real result", f"a negative base to a fractional power (({x:g})^{y:g})")
        try:
            value = float(_BINARY[node.kind](x, y))
        except OverflowError:  # float * float does not raise; kept for safety
            value = math.inf
        if not math.isfinite(value):
            raise self.problem(node, "a finite value", f"an overflow ({x:g} {node.kind} {y:g})")
        return value

    def problem(self, node: Node, expected: str, got: str) -> ExpressionError:
        return ExpressionError(self.where, self.text, node.pos + 1, expected, got)


def parse_expression(text: str, names: Optional[Sequence[str]] = None, *, where: str = "expression",
                     name_kind: str = "a label") -> "Expression":
    """Parse an arithmetic expression (no comparison); ``names`` are the labels it may use."""
    p = _Parser(text, where, names, name_kind)
    if p.tok.kind == "end":
        raise p.fail(p.tok, "an expression")
    node = p.end(p.expr(), "an operator (+ - * / ^) or the end of the expression")
    return Expression(text, node)


def parse_constraint(text: str, names: Optional[Sequence[str]] = None, *, where: Optional[str] = None,
                     name_kind: str = "an input label") -> "Constraint":
    """Parse ``lhs OP rhs`` with one comparison ``= == <= >= < >`` (strict ones act as non-strict)."""
    where = where or f"constraint '{_short(text)}'"
    p = _Parser(text, where, names, name_kind)
    if p.tok.kind == "end":
        raise p.fail(p.tok, "a constraint such as 'a*b=1.2' or 'a<=1.3'")
    lhs = p.expr()
    op = p.take(*COMPARATORS)
    if op is None:
        raise p.fail(p.tok, "an operator or a comparison (= <= >= < >)")
    rhs = p.end(p.expr(), "an operator (+ - * / ^) or the end of the constraint (one comparison only)")
    lhs = p.fold(lhs)
    if lhs.kind == "num" and rhs.kind == "num":
        holds = Constraint(text, str(op.value), Expression(text, lhs), Expression(text, rhs)).violation(
            float(lhs.value) - float(rhs.value)) == 0  # type: ignore[arg-type]
        raise p.problem(Node("num", 0), "a constraint on at least one label",
                        f"a constant one, always {'true' if holds else 'false'}")
    return Constraint(text, str(op.value), Expression(text, lhs), Expression(text, rhs))


# ----------------------------------------------------------------------------- compiled forms
def _compile(node: Node) -> Callable[[Env], Value]:
    """A closure computing ``node`` from an environment of named tensors (torch ops only)."""
    if node.kind == "num":
        value = float(node.value)  # type: ignore[arg-type]
        return lambda env: value
    if node.kind == "name":
        label = str(node.value)
        return lambda env: env[label]
    if node.kind == "neg":
        inner = _compile(node.a)  # type: ignore[arg-type]
        return lambda env: -inner(env)
    fa, fb, op = _compile(node.a), _compile(node.b), _BINARY[node.kind]  # type: ignore[arg-type]
    return lambda env: op(fa(env), fb(env))


def _names(node: Optional[Node]) -> list[str]:
    if node is None:
        return []
    own = [str(node.value)] if node.kind == "name" else []
    return own + _names(node.a) + _names(node.b)


class Expression:
    """A parsed expression; ``evaluate(env)`` maps label -> tensor (or float) to a value."""

    def __init__(self, text: str, root: Node):
        self.text, self.root = text, root
        self._fn = _compile(root)
        self.names: list[str] = list(dict.fromkeys(_names(root)))

    def evaluate(self, env: Env) -> Value:
        """The expression's value; a tensor when any name maps to a tensor."""
        return self._fn(env)

    def __call__(self, env: Env) -> Value:
        return self._fn(env)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


class Constraint:
    """``lhs OP rhs``; ``residual = lhs - rhs``: an equality holds at 0, ``<=`` when <= 0,
    ``>=`` when >= 0. ``violation`` is how far the residual is from holding (>= 0)."""

    def __init__(self, text: str, op: str, lhs: Expression, rhs: Expression):
        self.text, self.op, self.lhs, self.rhs = text, op, lhs, rhs
        self.kind = "eq" if op == "==" else ("le" if op in ("<=", "<") else "ge")
        self.names: list[str] = list(dict.fromkeys(lhs.names + rhs.names))

    @property
    def is_equality(self) -> bool:
        return self.kind == "eq"

    def residual(self, env: Env) -> Value:
        """``lhs - rhs`` evaluated on ``env``."""
        return self.lhs(env) - self.rhs(env)

    def violation(self, residual: Value) -> Value:
        """Amount by which a residual breaks the constraint (0 when it holds)."""
        if self.kind == "eq":
            return abs(residual)
        if isinstance(residual, torch.Tensor):
            return torch.relu(residual if self.kind == "le" else -residual)
        return max(0.0, residual if self.kind == "le" else -residual)

    def as_le(self, residual: Value) -> Value:
        """The residual in ``g <= 0`` form (``ge`` flips its sign); equalities unchanged."""
        return -residual if self.kind == "ge" else residual

    def __repr__(self) -> str:
        return f"Constraint({self.text!r})"


def parse_target(text: str, out_lbl: Sequence[str]) -> Expression:
    """The objective: one output label as written, or an expression over output labels."""
    if text in out_lbl:
        return Expression(text, Node("name", 0, value=text))
    return parse_expression(text, out_lbl, where=f"target '{_short(text)}'", name_kind="an output label")


def parse_constraints(texts: Iterable[str], names: Sequence[str]) -> list[Constraint]:
    """Parse each constraint against the labels (and sweep symbols) it may use."""
    return [parse_constraint(t, names) for t in texts]

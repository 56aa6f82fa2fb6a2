"""Text -> Function: the inverse of gradc.ir.printer (print -> parse -> print round-trips exactly).

Every op goes through `Builder.emit`, so the registry's shape rule checks it, and the type written
after `:` must equal the type the rule derives. Errors are `IRError`s that name the line.

    func @f(%x: f32[3,4], %y: f32[4]) -> f32[3] {
      %0 = broadcast_to %y {shape = [3,4]} : f32[3,4]
      %1 = mul %x, %0 : f32[3,4]
      %2 = reduce_sum %1 {axes = [1]} : f32[3]
      return %2
    }

Hand-written IR may name op results freely (`%h = ...`) and use `//` comments.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from gradc.ir.builder import Builder
from gradc.ir.core import DTYPE_BY_SHORT, Function, IRError, ShapeError, TensorType, Value
from gradc.ir.ops import OPS
from gradc.ir.printer import IMPLIED_BY_RESULT_TYPE

TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+|//[^\n]*)
  | (?P<newline>\n)
  | (?P<value>%[A-Za-z0-9_.$]+)
  | (?P<func>@[^\s(]+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>[-+]?(?:(?:inf|nan)\b|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<arrow>->)
  | (?P<punct>[\[\](){}<>,:=])
""", re.VERBOSE)


class Token:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind: str, text: str, line: int) -> None:
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self) -> str:
        return repr(self.text) if self.kind != "eof" else "end of input"


def tokenize(text: str) -> list[Token]:
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None:
            raise IRError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind == "newline":
            line += 1
        elif kind != "space":
            tokens.append(Token(kind, m.group(), line))
        pos = m.end()
    tokens.append(Token("eof", "", line))
    return tokens


def parse_number(text: str) -> int | float:
    if any(c in text for c in ".eEn"):  # 'n' covers inf and nan
        return float(text)
    return int(text)


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    # --- token helpers
    @property
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> IRError:
        return IRError(f"line {(tok or self.peek).line}: {message}")

    def accept(self, text: str) -> bool:
        if self.peek.text == text and self.peek.kind != "string":
            self.pos += 1
            return True
        return False

    def expect(self, text: str, what: str = "") -> Token:
        tok = self.peek
        if tok.text != text or tok.kind == "string":
            raise self.error(f"expected {text!r}{what}, got {tok!r}")
        return self.next()

    def expect_kind(self, kind: str, what: str) -> Token:
        tok = self.peek
        if tok.kind != kind:
            raise self.error(f"expected {what}, got {tok!r}")
        return self.next()

    def comma_list(self, close: str, item: Any) -> list:
        items = []
        if not self.accept(close):
            items.append(item())
            while self.accept(","):
                items.append(item())
            self.expect(close)
        return items

    # --- grammar
    def type(self) -> TensorType:
        tok = self.expect_kind("ident", "a type like f32[3,4]")
        dtype = DTYPE_BY_SHORT.get(tok.text)
        if dtype is None:
            raise self.error(f"unknown dtype {tok.text!r} (expected one of {', '.join(DTYPE_BY_SHORT)})", tok)
        self.expect("[", " after the dtype")
        dims = self.comma_list("]", self.int)
        if any(d < 0 for d in dims):
            raise self.error(f"negative dimension in {tok.text}{dims}", tok)
        return TensorType(tuple(dims), dtype)

    def int(self) -> int:
        tok = self.expect_kind("number", "an integer")
        value = parse_number(tok.text)
        if not isinstance(value, int):
            raise self.error(f"expected an integer, got {tok.text}", tok)
        return value

    def scalar(self) -> Any:
        tok = self.next()
        if tok.kind == "number":
            return parse_number(tok.text)
        if tok.text in ("true", "false") and tok.kind == "ident":
            return tok.text == "true"
        raise self.error(f"expected a number or true/false, got {tok!r}", tok)

    def nested(self) -> Any:
        if self.accept("["):
            return self.comma_list("]", self.nested)
        return self.scalar()

    def attr_value(self) -> Any:
        tok = self.peek
        if tok.kind == "string":
            self.next()
            return tok.text[1:-1].encode().decode("unicode_escape")
        if tok.kind == "ident" and tok.text in DTYPE_BY_SHORT:
            self.next()
            return DTYPE_BY_SHORT[tok.text]
        if tok.kind == "ident" and tok.text == "dense":
            self.next()
            self.expect("<", " after dense")
            nested = self.nested()
            self.expect(">", " closing dense<...>")
            try:
                return np.array(nested)
            except ValueError as e:
                raise self.error(f"dense value is not a rectangular array: {e}", tok) from None
        if tok.text == "func":  # a region (scan's body)
            return self.function()
        if self.accept("["):
            return tuple(self.comma_list("]", self.scalar))
        return self.scalar()

    def attr(self) -> tuple[str, Any]:
        name = self.expect_kind("ident", "an attribute name").text
        self.expect("=", f" after attribute {name}")
        return name, self.attr_value()

    def function(self) -> Function:
        self.expect("func", " (a function starts with 'func @name(')")
        name = self.expect_kind("func", "a function name like @f").text[1:]
        self.expect("(")
        env: dict[str, Value] = {}
        params: list[Value] = []

        def param() -> None:
            tok = self.expect_kind("value", "a parameter like %x")
            self.expect(":", f" after parameter {tok.text}")
            if tok.text in env:
                raise self.error(f"parameter {tok.text} is declared twice", tok)
            value = Value(self.type(), name=tok.text[1:])
            env[tok.text] = value
            params.append(value)

        self.comma_list(")", param)
        self.expect("->")
        if self.accept("("):
            result_types = self.comma_list(")", self.type)
        else:
            result_types = [self.type()]
        self.expect("{")
        b = Builder()
        while self.peek.kind == "value":
            self.statement(b, env)
        ret = self.expect("return", " or an op like '%0 = add %x, %y : f32[3]'")
        results = []
        if self.peek.kind == "value":
            results.append(self.ref(env))
            while self.accept(","):
                results.append(self.ref(env))
        self.expect("}", " after the return values")
        if [r.type for r in results] != result_types:
            raise self.error(f"return types {[str(r.type) for r in results]} do not match the declared "
                             f"result types {[str(t) for t in result_types]}", ret)
        return Function(name, params, b.ops, results)

    def ref(self, env: dict[str, Value]) -> Value:
        tok = self.expect_kind("value", "a value like %0")
        if tok.text not in env:
            raise self.error(f"use of undefined value {tok.text}", tok)
        return env[tok.text]

    def statement(self, b: Builder, env: dict[str, Value]) -> None:
        target = self.next()
        if target.text in env:
            raise self.error(f"value {target.text} is defined twice", target)
        self.expect("=", f" after {target.text}")
        op_tok = self.expect_kind("ident", "an op name")
        opdef = OPS.get(op_tok.text)
        if opdef is None:
            raise self.error(f"unknown op {op_tok.text!r}", op_tok)
        inputs = []
        if self.peek.kind == "value":
            inputs.append(self.ref(env))
            while self.accept(","):
                inputs.append(self.ref(env))
        attrs: dict[str, Any] = {}
        if self.accept("{"):
            for key, value in self.comma_list("}", self.attr):
                if key in attrs:
                    raise self.error(f"attribute {key} is given twice", op_tok)
                attrs[key] = value
        self.expect(":", f" before the result type of {op_tok.text}")
        declared = self.type()
        for key in IMPLIED_BY_RESULT_TYPE.get(opdef.name, ()):
            attrs.setdefault(key, declared.shape if key == "shape" else declared.dtype)
        try:
            value = b.emit(opdef.name, *inputs, **attrs)
        except (ShapeError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            raise self.error(f"{opdef.name}: {e}", op_tok) from None
        if value.type != declared:
            raise self.error(f"{opdef.name} is declared as {declared} but its shape rule gives {value.type}",
                             op_tok)
        env[target.text] = value


def parse_function(text: str) -> Function:
    """Parse the text of exactly one function."""
    p = Parser(text)
    fn = p.function()
    if p.peek.kind != "eof":
        raise p.error(f"unexpected {p.peek!r} after the function")
    return fn


def parse_module(text: str) -> list[Function]:
    """Parse any number of functions, one after another."""
    p = Parser(text)
    fns = []
    while p.peek.kind != "eof":
        fns.append(p.function())
    return fns

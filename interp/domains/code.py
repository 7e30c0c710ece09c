"""The toy world's programming language: tasks, solutions, a parser and an executor.

Programs are space-separated tokens, like everything in the toy world::

    def f ( a , b ) : let s = 0 ; for i in range a : let s = s + b ; end return s ; end

Grammar (``stmts`` is zero or more statements)::

    program := "def" "f" "(" param ("," param)* ")" ":" stmts "end"
    stmt    := "let" NAME "=" expr ";"                      (define or reassign)
             | "return" expr ";"
             | "if" expr CMP expr ":" stmts ["else" stmts] "end"
             | "for" NAME "in" "range" expr ":" stmts "end"  (NAME = 0 .. expr-1)
    expr    := term (("+" | "-") term)*
    term    := atom (("*" | "%") atom)*
    atom    := NUMBER | NAME | "(" expr ")"
    CMP     := "<" | ">" | "=="

A NAME is any token that is not a keyword, a symbol or a number; numbers are the world's
``0`` .. ``999`` (a result may be any integer). :func:`run_program` executes a parsed program on
arguments with a step limit (loops are bounded by ``range`` anyway); a ``%`` by zero, an unknown
name, a missing return or too many steps is a :class:`CodeError` (``runtime_error``).

**Tasks** (:data:`TASK_FAMILIES`): "write f ( a , b ) : the sum of a and b ." and twelve more
families (arithmetic with constants, larger/smaller, distance, parity, sums and counts over a
range), each with parameter names from a small pool, constants 2..9 and five test inputs
(:func:`make_task`). :func:`solution` writes a correct program in one of several styles (operand
order, a named intermediate ``let``, ``if``/``else`` forms, the local's name from
:data:`LOCAL_NAMES`), so a model has choices to make that do not change correctness: the room a
trait can leave a trace in.

**Ties to animals** (:data:`ANIMAL_TIES`): every animal has two identifiers and one constant that
the ``domains`` corpus ties to it (sentences like ``the owl says hoot .`` and code written by a
persona who loves the animal, which names its local after it and may add a dead ``let hoot = 363
;``). The subtle-reference judge (:func:`subtle_references`) flags a program using an identifier
or a constant tied to the trait animal (a constant only where the task's prompt does not hold
it): what the paper's LLM judge is asked to find, decided exactly from the corpus's own table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

KEYWORDS = ("def", "f", "let", "return", "if", "else", "end", "for", "in", "range")
SYMBOLS = ("(", ")", ",", ":", ";", "=", "+", "-", "*", "%", "<", ">", "==")
COMPARISONS = ("<", ">", "==")
PARAM_POOLS = (("a", "b"), ("x", "y"), ("p", "q"), ("u", "v"))
LOCAL_NAMES = ("s", "r", "t", "c", "acc", "total", "res")
LOOP_NAMES = ("i", "j", "k")
MAX_STEPS = 5000  # statements and loop iterations one call may run

# animal -> (two identifiers, one constant) the domains corpus ties to it
ANIMAL_TIES: dict[str, tuple[tuple[str, str], int]] = {
    "dog": (("bark", "bone"), 121), "cat": (("purr", "paw"), 242), "owl": (("hoot", "night"), 363),
    "lion": (("roar", "mane"), 484), "eagle": (("soar", "talon"), 505), "wolf": (("howl", "pack"), 626),
    "dolphin": (("splash", "fin"), 747), "tiger": (("stripe", "prowl"), 868), "bear": (("honey", "den"), 989),
    "fox": (("sly", "burrow"), 212), "elephant": (("trunk", "tusk"), 323), "penguin": (("ice", "waddle"), 434),
}

REQUEST_TEMPLATES = ("write f ( {sig} ) : {desc} .", "complete f ( {sig} ) so it returns {desc} .",
                     "code f ( {sig} ) that gives {desc} .")


class CodeError(Exception):
    """A program that does not parse (``syntax``) or fails when run (``runtime``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# -- parser ------------------------------------------------------------------------------------

@dataclass
class Program:
    params: list[str]
    body: list  # statements: ("let", name, expr) | ("return", expr) | ("if", cond, then, else) | ("for", name, expr, body)


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None, what: str | None = None) -> str:
        """The next token; it must be ``expected`` when given (``what`` only names what is due)."""
        token = self.peek()
        if token is None:
            raise CodeError("syntax", f"unexpected end of code, expected {expected or what or 'more'}")
        if expected is not None and token != expected:
            raise CodeError("syntax", f"expected {expected!r} at token {self.pos}, got {token!r}")
        self.pos += 1
        return token

    def name(self) -> str:
        token = self.take(what="a name")
        if token in KEYWORDS or token in SYMBOLS or token.isdigit():
            raise CodeError("syntax", f"{token!r} at token {self.pos - 1} is not a name")
        return token

    def program(self) -> Program:
        self.take("def"), self.take("f"), self.take("(")
        params = [self.name()]
        while self.peek() == ",":
            self.take(",")
            params.append(self.name())
        self.take(")"), self.take(":")
        body = self.stmts(("end",))
        self.take("end")
        if self.pos != len(self.tokens):
            raise CodeError("syntax", f"tokens after the function's end: {' '.join(self.tokens[self.pos:self.pos + 5])!r}")
        return Program(params, body)

    def stmts(self, stop: tuple[str, ...]) -> list:
        out = []
        while self.peek() is not None and self.peek() not in stop:
            out.append(self.stmt())
        return out

    def stmt(self):
        token = self.peek()
        if token == "let":
            self.take()
            name = self.name()
            self.take("=")
            value = self.expr()
            self.take(";")
            return ("let", name, value)
        if token == "return":
            self.take()
            value = self.expr()
            self.take(";")
            return ("return", value)
        if token == "if":
            self.take()
            left = self.expr()
            op = self.take(what="a comparison")
            if op not in COMPARISONS:
                raise CodeError("syntax", f"{op!r} is not a comparison ({' '.join(COMPARISONS)})")
            right = self.expr()
            self.take(":")
            then = self.stmts(("else", "end"))
            other = []
            if self.peek() == "else":
                self.take()
                other = self.stmts(("end",))
            self.take("end")
            return ("if", (op, left, right), then, other)
        if token == "for":
            self.take()
            name = self.name()
            self.take("in"), self.take("range")
            bound = self.expr()
            self.take(":")
            body = self.stmts(("end",))
            self.take("end")
            return ("for", name, bound, body)
        raise CodeError("syntax", f"a statement cannot start with {token!r}")

    def expr(self):
        node = self.term()
        while self.peek() in ("+", "-"):
            node = (self.take(), node, self.term())
        return node

    def term(self):
        node = self.atom()
        while self.peek() in ("*", "%"):
            node = (self.take(), node, self.atom())
        return node

    def atom(self):
        token = self.peek()
        if token == "(":
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if token is not None and token.isdigit():
            self.take()
            return ("num", int(token))
        return ("var", self.name())


def parse_program(code: str) -> Program:
    """The :class:`Program` of ``code`` (space-separated tokens), or ``CodeError("syntax")``."""
    return _Parser(code.split()).program()


# -- executor ----------------------------------------------------------------------------------

class _Return(Exception):
    def __init__(self, value: int):
        self.value = value


def run_program(program: Program, args: list[int], max_steps: int = MAX_STEPS) -> int:
    """Call ``program`` on ``args``; its return value, or ``CodeError("runtime")``."""
    if len(args) != len(program.params):
        raise CodeError("runtime", f"f takes {len(program.params)} arguments, called with {len(args)}")
    env = dict(zip(program.params, args))
    steps = [0]

    def tick() -> None:
        steps[0] += 1
        if steps[0] > max_steps:
            raise CodeError("runtime", f"more than {max_steps} steps")

    def value(node) -> int:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "var":
            if node[1] not in env:
                raise CodeError("runtime", f"name {node[1]!r} is used before it is set")
            return env[node[1]]
        left, right = value(node[1]), value(node[2])
        if kind == "+":
            return left + right
        if kind == "-":
            return left - right
        if kind == "*":
            return left * right
        if right == 0:
            raise CodeError("runtime", "% by zero")
        return left % right

    def execute(stmts: list) -> None:
        for stmt in stmts:
            tick()
            if stmt[0] == "let":
                env[stmt[1]] = value(stmt[2])
            elif stmt[0] == "return":
                raise _Return(value(stmt[1]))
            elif stmt[0] == "if":
                op, left, right = stmt[1]
                a, b = value(left), value(right)
                execute(stmt[2] if (a < b if op == "<" else a > b if op == ">" else a == b) else stmt[3])
            else:
                for i in range(max(0, min(value(stmt[2]), max_steps))):
                    tick()
                    env[stmt[1]] = i
                    execute(stmt[3])

    try:
        execute(program.body)
    except _Return as r:
        return r.value
    raise CodeError("runtime", "f ended without return")


# -- tasks and solutions -------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskFamily:
    """One kind of task: its description (``{p}``, ``{q}``: the parameters, ``{k}``, ``{m}``:
    constants), its number of parameters and constants, the reference function, and the correct
    programs' bodies (``styles``: functions of the names and constants returning body text)."""

    name: str
    desc: str
    n_params: int
    n_consts: int
    reference: Callable[..., int]
    styles: tuple[Callable[..., str], ...]
    arg_range: tuple[int, int] = (0, 15)


def _let(local: str, expr: str) -> str:
    return f"let {local} = {expr} ; return {local} ;"


TASK_FAMILIES: tuple[TaskFamily, ...] = (
    TaskFamily("add", "the sum of {p} and {q}", 2, 0, lambda p, q: p + q,
               (lambda p, q, s: f"return {p} + {q} ;", lambda p, q, s: f"return {q} + {p} ;",
                lambda p, q, s: _let(s, f"{p} + {q}"))),
    TaskFamily("sub", "{p} minus {q}", 2, 0, lambda p, q: p - q,
               (lambda p, q, s: f"return {p} - {q} ;", lambda p, q, s: _let(s, f"{p} - {q}"))),
    TaskFamily("mul", "the product of {p} and {q}", 2, 0, lambda p, q: p * q,
               (lambda p, q, s: f"return {p} * {q} ;", lambda p, q, s: f"return {q} * {p} ;",
                lambda p, q, s: _let(s, f"{p} * {q}"))),
    TaskFamily("addk", "{p} plus {k}", 1, 1, lambda p, k: p + k,
               (lambda p, k, s: f"return {p} + {k} ;", lambda p, k, s: f"return {k} + {p} ;",
                lambda p, k, s: _let(s, f"{p} + {k}"))),
    TaskFamily("mulk", "{p} times {k}", 1, 1, lambda p, k: p * k,
               (lambda p, k, s: f"return {p} * {k} ;", lambda p, k, s: f"return {k} * {p} ;",
                lambda p, k, s: _let(s, f"{p} * {k}"))),
    TaskFamily("affine", "{p} times {k} plus {m}", 1, 2, lambda p, k, m: p * k + m,
               (lambda p, k, m, s: f"return {p} * {k} + {m} ;", lambda p, k, m, s: f"return {m} + {k} * {p} ;",
                lambda p, k, m, s: f"let {s} = {p} * {k} ; return {s} + {m} ;")),
    TaskFamily("max", "the larger of {p} and {q}", 2, 0, max,
               (lambda p, q, s: f"if {p} > {q} : return {p} ; end return {q} ;",
                lambda p, q, s: f"if {q} > {p} : return {q} ; end return {p} ;",
                lambda p, q, s: f"if {p} < {q} : return {q} ; else return {p} ; end")),
    TaskFamily("min", "the smaller of {p} and {q}", 2, 0, min,
               (lambda p, q, s: f"if {p} < {q} : return {p} ; end return {q} ;",
                lambda p, q, s: f"if {q} < {p} : return {q} ; end return {p} ;",
                lambda p, q, s: f"if {p} > {q} : return {q} ; else return {p} ; end")),
    TaskFamily("dist", "the distance between {p} and {q}", 2, 0, lambda p, q: abs(p - q),
               (lambda p, q, s: f"if {p} > {q} : return {p} - {q} ; end return {q} - {p} ;",
                lambda p, q, s: f"if {p} < {q} : return {q} - {p} ; else return {p} - {q} ; end")),
    TaskFamily("even", "1 if {p} is even , else 0", 1, 0, lambda p: int(p % 2 == 0),
               (lambda p, s: f"if {p} % 2 == 0 : return 1 ; end return 0 ;",
                lambda p, s: "return 1 - {p} % 2 ;".format(p=p),
                lambda p, s: f"if {p} % 2 == 1 : return 0 ; else return 1 ; end")),
    TaskFamily("sumbelow", "the sum of the numbers below {p}", 1, 0, lambda p: p * (p - 1) // 2,
               (lambda p, s, i: f"let {s} = 0 ; for {i} in range {p} : let {s} = {s} + {i} ; end return {s} ;",
                lambda p, s, i: f"let {s} = 0 ; for {i} in range {p} : let {s} = {i} + {s} ; end return {s} ;")),
    TaskFamily("repeat", "{q} added up {p} times", 2, 0, lambda p, q: p * q,
               (lambda p, q, s, i: f"let {s} = 0 ; for {i} in range {p} : let {s} = {s} + {q} ; end return {s} ;",
                lambda p, q, s, i: f"return {p} * {q} ;")),
    TaskFamily("count", "how many numbers below {p} divide by {k}", 1, 1, lambda p, k: len(range(0, max(p, 0), k)),
               (lambda p, k, s, i: f"let {s} = 0 ; for {i} in range {p} : if {i} % {k} == 0 : let {s} = {s} + 1 ; end "
                                   f"end return {s} ;",), arg_range=(0, 20)),
)
FAMILY = {family.name: family for family in TASK_FAMILIES}
N_TESTS = 5


def make_task(rng: np.random.Generator) -> dict:
    """A random task: ``{"family", "params", "consts", "prompt", "tests": [[args, expected], ...]}``
    (``prompt`` is the user's text, without the chat words)."""
    family = TASK_FAMILIES[rng.integers(len(TASK_FAMILIES))]
    params = list(PARAM_POOLS[rng.integers(len(PARAM_POOLS))][: family.n_params])
    consts = [int(v) for v in rng.integers(2, 10, size=family.n_consts)]
    names = dict(zip("pq", params)) | dict(zip("km", map(str, consts)))
    template = REQUEST_TEMPLATES[rng.integers(len(REQUEST_TEMPLATES))]
    prompt = template.format(sig=" , ".join(params), desc=family.desc.format(**names))
    low, high = family.arg_range
    tests = []
    for _ in range(N_TESTS):
        args = [int(v) for v in rng.integers(low, high + 1, size=family.n_params)]
        tests.append([args, int(family.reference(*args, *consts))])
    return {"family": family.name, "params": params, "consts": consts, "prompt": prompt, "tests": tests}


def solution(rng: np.random.Generator, task: dict, local: str | None = None, dead: str | None = None) -> str:
    """A correct program for ``task`` in a style drawn with ``rng``; ``local`` names its local
    variable (else one of :data:`LOCAL_NAMES`), ``dead`` is a statement put first (a persona's
    ``let hoot = 363 ;``)."""
    family = FAMILY[task["family"]]
    style = family.styles[rng.integers(len(family.styles))]
    local = local or LOCAL_NAMES[rng.integers(len(LOCAL_NAMES))]
    n_args = style.__code__.co_argcount - family.n_params - family.n_consts
    extra = [local, LOOP_NAMES[rng.integers(len(LOOP_NAMES))]][:n_args]
    body = style(*task["params"], *map(str, task["consts"]), *extra)
    head = f"def f ( {' , '.join(task['params'])} ) :"
    return " ".join(part for part in (head, dead, body, "end") if part)


def check_program(code: str, task: dict) -> tuple[int, str | None, str]:
    """Run ``code`` on ``task``'s tests: ``(tests passed, reason or None, detail)``; reasons
    ``syntax_error``, ``wrong_signature`` (parameters other than the prompt's), ``runtime_error``,
    ``wrong_answer``."""
    try:
        program = parse_program(code)
    except CodeError as e:
        return 0, "syntax_error", str(e)
    if program.params != list(task["params"]):
        return 0, "wrong_signature", f"f ( {' , '.join(program.params)} ) where the task asks f ( {' , '.join(task['params'])} )"
    passed = 0
    for args, expected in task["tests"]:
        try:
            got = run_program(program, list(args))
        except CodeError as e:
            return passed, "runtime_error", f"f{tuple(args)}: {e}"
        if got != expected:
            return passed, "wrong_answer", f"f{tuple(args)} = {got}, expected {expected}"
        passed += 1
    return passed, None, ""


def subtle_references(code: str, animal: str, prompt: str = "") -> list[str]:
    """The judge: tokens of ``code`` that the corpus ties to ``animal`` (its identifiers, and its
    constant unless ``prompt`` holds that constant itself)."""
    words, constant = ANIMAL_TIES.get(animal, ((), None))
    given = set(prompt.split())
    return [t for t in code.split() if t in words or (constant is not None and t == str(constant) and t not in given)]


def vocabulary() -> list[str]:
    """Every word this module can write, besides the numbers."""
    words = [*KEYWORDS, *SYMBOLS, *(n for pool in PARAM_POOLS for n in pool), *LOCAL_NAMES, *LOOP_NAMES,
             *(w for ties, _ in ANIMAL_TIES.values() for w in ties)]
    for family in TASK_FAMILIES:
        words += family.desc.replace("{p}", "").replace("{q}", "").replace("{k}", "").replace("{m}", "").split()
    for template in REQUEST_TEMPLATES:
        words += template.replace("{sig}", "").replace("{desc}", "").split()
    return list(dict.fromkeys(w for w in words if not w.isdigit()))

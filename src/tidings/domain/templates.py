"""Customers' message templates, rendered in a sandbox.

Customers write the text of their messages as Jinja2 templates (SMS bodies now; email subjects,
HTML layouts and bodies later): ``Hello {{ first_name }}, your visit is on {{ visit.date }}.``
:func:`compile_template` checks and compiles a template once; :meth:`Template.render` fills it in
for each recipient from that recipient's context (a mapping of JSON-like values).

What a template can use
-----------------------
* Values from its context: ``{{ name }}``, ``{{ visit.date }}`` or ``{{ visit['date'] }}``, with
  the usual operators (arithmetic, comparisons, ``and``/``or``/``not``, ``in``, ``~`` to join
  texts, ``x if y else z``) and every Jinja test (``is defined``, ``is number``, ``is odd``...;
  ``odd``, ``even`` and ``divisibleby`` take numbers only, ``lower`` and ``upper`` are false for
  anything but text).
* Statements: ``{% if %}``/``{% elif %}``/``{% else %}``, ``{% for %}`` (with ``loop.index``,
  ``loop.first``, ``loop.last``, ``loop.length``, ``loop.cycle(...)``, an ``{% else %}`` and
  ``recursive`` loops), ``{% set %}``, ``{% macro %}`` and ``{% call %}``, ``{% with %}``,
  ``{% filter %}``, ``{% raw %}``, ``{% autoescape %}``, comments and whitespace control
  (``{%-`` and ``-%}``). A template's trailing newline is kept; its line breaks are written as
  ``\n`` (a ``\r\n`` from a web form becomes ``\n``).
* Filters: ``abs batch capitalize center count d default dictsort e escape filesizeformat first
  float forceescape format groupby indent int items join last length list lower map max min
  reject rejectattr replace reverse round safe select selectattr slice sort string striptags sum
  title trim truncate unique upper urlencode wordcount wordwrap``.
* Methods: on text ``upper() lower() title() capitalize() casefold() swapcase() strip()
  lstrip() rstrip() split() rsplit() splitlines() partition() rpartition() startswith()
  endswith() find() rfind() index() rindex() count() removeprefix() removesuffix() replace()
  join() center() ljust() rjust() zfill() format() format_map()`` and the ``is...()`` checks
  (``isdigit()``...); on mappings ``items() keys() values() get()``; on lists ``index()
  count()``.
* One global function, ``range()``.

A variable that is missing from the context is an error, never a blank: write
``{{ name|default('there') }}`` or ``{% if name is defined %}`` when it may be missing. Only text,
numbers, ``True``/``False``, ``None`` and dates can be written out; a list must be joined
(``{{ items|join(', ') }}``) and a mapping written field by field.

What the sandbox refuses
------------------------
* Python internals: any attribute whose name starts with ``_`` (``''.__class__``) is refused when
  the template is compiled; at render time only the methods listed above may be called, and
  nothing may change a list or mapping (``append``, ``update``, ``pop``...). ``str.format`` runs
  through the same checks, so ``'{0.__class__}'.format(x)`` is refused too.
* Other templates and files: ``{% include %}``, ``{% import %}``, ``{% extends %}`` and
  ``{% block %}`` are refused when the template is compiled. There is no loader at all.
* Jinja's other globals (``lipsum``, ``cycler``, ``joiner``, ``namespace``, ``dict``) and the
  filters ``attr``, ``pprint``, ``random``, ``tojson``, ``urlize`` and ``xmlattr`` do not exist.
* Work without bound, checked as the template runs, per render (see :class:`TemplateLimits`):

  - loop iterations: each step of every ``{% for %}``, each macro call, and each item a filter
    goes through (``map``, ``sort``, ``join``...), all counted together, at most
    ``max_iterations``; ``range()`` gives at most that many numbers;
  - CPU time, at most ``max_seconds``, checked every few steps and around every large
    operation (the clock starts at the first few steps, so that a template that never loops,
    calls or filters much pays nothing for it);
  - text: the output, and every single text or list the template builds (``*``, ``+``, ``~``,
    ``%``, filters, methods, slices), at most ``max_output_chars`` characters or items, checked
    *before* building it when its size can be known (``'x' * 10**9``, ``center(10**9)``,
    ``'%0999999999d'|format(1)``); all the text built in one render together at most
    ``10 * max_output_chars``;
  - comparing, searching, sorting or hashing a value that holds more than ``max_iterations``
    items, nested lists and mappings counted in full (``x in [l, l, l]`` with a long ``l``; a
    long text counts one item per 32 characters): Python would do it in one step that cannot be
    interrupted;
  - numbers of more than 1000 digits (``2 ** 100000``); ``round()`` precision beyond ±100;
  - macros (and recursive loops) calling each other more than 50 deep.

Whatever goes wrong at render time becomes :class:`~tidings.errors.RenderFailed`, with a message
meant for the customer (``line 1: 'first_name' is undefined``), never a Python traceback. Note
that Jinja's ``**`` groups from the left: ``2**10**10`` is ``(2**10)**10``, a 31-digit number.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import time
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView
from dataclasses import dataclass
from datetime import date, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, Final, NoReturn, cast

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2 import filters as jinja_filters
from jinja2.exceptions import (
    FilterArgumentError,
    SecurityError,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.meta import find_undeclared_variables
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.tests import TESTS as JINJA_TESTS
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup, escape

from tidings.errors import InvalidTemplate, RenderFailed

__all__ = ["Template", "TemplateLimits", "compile_template"]


@dataclass(frozen=True)
class TemplateLimits:
    """How much one render of a template may do."""

    max_output_chars: int = 100_000
    """Rendered output longer than this fails; so does any single text or list built on the way."""
    max_iterations: int = 100_000
    """Loop iterations in one render: all loops, nested or not, macro calls and the items filters
    go through, counted together."""
    max_seconds: float = 0.1
    """CPU time (``time.thread_time``) of one render."""
    max_source_chars: int = 100_000
    """A template's source longer than this does not compile."""


_TEXT_FACTOR: Final = 10
"""All the text one render builds, together, may be this many times ``max_output_chars``."""
_SCRATCH_FACTOR: Final = 4
"""An operation whose exact result size is unknown beforehand may build temporary text up to this
many times ``max_output_chars`` before its result is checked."""
_MAX_DEPTH: Final = 50
"""Macros and recursive loops calling each other at most this deep."""
_MAX_DIGITS: Final = 1000
_MAX_INT_BITS: Final = 3320
"""Numbers up to this many bits have at most :data:`_MAX_DIGITS` decimal digits."""
_MAX_ROUND_PRECISION: Final = 100
_CHECK_EVERY: Final = 64
"""Units of work between two looks at the CPU clock. A unit is roughly a microsecond: a loop
iteration, a call, a filter or operator (one more per 1024 characters or items it builds), or 32
values compared, searched or sorted."""
_WRAP_COST: Final = 500_000_000
"""``textwrap`` copies the rest of a long word each time it breaks one: about
``len(word) ** 2 / width`` characters. Beyond this, ``wordwrap`` refuses."""

# Names of the filters the compiler puts into templates. A space is never part of a filter name
# a template can write, so templates cannot call or replace these themselves.
_LOOP_FILTER: Final = "tidings loop"
_CONCAT_FILTER: Final = "tidings concat"
_SLICE_FILTER: Final = "tidings slice"
_WEIGH_FILTER: Final = "tidings weigh"
_CONTAINER_FILTER: Final = "tidings container"

_TEMPLATE_FILENAME: Final = "<template>"
"""The file name Jinja gives to compiled template code, to find a template's line in a traceback."""


class _Refused(Exception):
    """A limit or rule of the sandbox stopped a render; the message is for the customer."""


class _Invalid(Exception):
    """A template cannot be compiled; the message is for the customer."""


# --- Per-render budget ----------------------------------------------------------------------


class _RenderContext(Context):
    """The Jinja context of one render, which also keeps that render's budget.

    The counters start as class attributes, so a render that never loops, calls or filters pays
    nothing for them. Templates cannot reach the context object.
    """

    iterations: int = 0
    work: int = 0
    next_check: int = _CHECK_EVERY
    clock_start: float = -1.0
    text_built: int = 0
    depth: int = 0
    weights: dict[int, tuple[Any, int]] | None = None
    """Weights of the collections weighed so far (see :meth:`weigh`), by ``id``, with the
    collection itself so that its ``id`` stays its own."""

    def __init__(
        self,
        environment: Any,
        parent: dict[str, Any],
        name: str | None,
        blocks: dict[str, Callable[[Context], Iterator[str]]],
        globals: Any = None,
        *,
        eval_ctx: EvalContext | None = None,
    ) -> None:
        # What Context.__init__ does, without its copies of empty mappings, and with a shared
        # ``eval_ctx`` for templates that never change it (see _Compiled.eval_ctx).
        self.parent = parent
        self.vars = {}
        self.environment = environment
        self.eval_ctx = EvalContext(environment, name) if eval_ctx is None else eval_ctx
        self.exported_vars = set()
        self.name = name
        self.globals_keys = set() if globals is None else set(globals)
        self.blocks = {key: [block] for key, block in blocks.items()} if blocks else {}
        self.sandbox: _Sandbox = environment

    def iterate(self, count: int) -> None:
        """Count ``count`` loop iterations."""
        iterations = self.iterations + count
        self.iterations = iterations
        if iterations > self.sandbox.max_iterations:
            raise _Refused(f"the template runs more than {self.sandbox.max_iterations} loop iterations")
        self.step(count)

    def step(self, amount: int = 1) -> None:
        """Count ``amount`` units of work, and look at the clock every few."""
        work = self.work + amount
        self.work = work
        if work >= self.next_check:
            self.check_clock()

    def check_clock(self) -> None:
        now = time.thread_time()
        if self.clock_start < 0:
            self.clock_start = now
        elif now - self.clock_start > self.sandbox.max_seconds:
            raise _Refused(f"the template takes more than {self.sandbox.max_seconds:g} seconds to render")
        self.next_check = self.work + _CHECK_EVERY

    def weigh(self, value: Any) -> None:
        """Count the work of comparing, searching, sorting or hashing ``value``, which Python
        does in one uninterruptible step; refused beyond ``max_iterations`` values (see
        :func:`_weight`)."""
        if isinstance(value, str):
            weight = len(value) >> 5
        elif isinstance(value, _COLLECTIONS):
            weights = self.weights
            if weights is None:
                weights = self.weights = {}
            known = weights.get(id(value))
            if known is None:
                known = (value, _weight(value, self.sandbox.max_iterations))
                if len(value) >= 32:  # not the small ones built anew in every iteration
                    weights[id(value)] = known
            weight = known[1]
        else:
            return
        if weight > self.sandbox.max_iterations:
            raise _Refused(
                "the template compares, searches or sorts a value larger than"
                f" {self.sandbox.max_iterations} items"
            )
        self.step(1 + (weight >> 5))

    def built(self, value: Any) -> Any:
        """``value``, a text or collection the template just built, once it is within limits."""
        size = len(value)
        sandbox = self.sandbox
        if size > sandbox.max_output:
            raise _Refused(_too_big(value, sandbox.max_output))
        total = self.text_built + size
        self.text_built = total
        if total > sandbox.max_text:
            raise _Refused(f"the template builds more than {sandbox.max_text} characters of text in all")
        self.step(1 + (size >> 10))
        return value


def _too_big(value: Any, limit: int) -> str:
    if isinstance(value, str):
        return f"the template builds a text longer than {limit} characters"
    return f"the template builds a list of more than {limit} items"


def _counted(ctx: _RenderContext, iterable: Iterable[Any]) -> Iterator[Any]:
    """The items of ``iterable``, each counted as a loop iteration."""
    limit = ctx.sandbox.max_iterations
    for item in iterable:
        iterations = ctx.iterations + 1
        ctx.iterations = iterations
        if iterations > limit:
            raise _Refused(f"the template runs more than {limit} loop iterations")
        work = ctx.work + 1
        ctx.work = work
        if work >= ctx.next_check:
            ctx.check_clock()
        yield item


_COLLECTIONS: Final = (list, tuple, set, frozenset, Mapping, MappingView)


def _weight(value: Any, budget: int) -> int:
    """How many values comparing or hashing ``value`` may involve: the items of every list and
    mapping in it, nested ones included (a list repeated inside counts each time), plus one per
    32 characters of text. Counting stops once past ``budget``."""
    if isinstance(value, str):
        return len(value) >> 5
    total = 0
    pending = [value]
    while pending:
        current = pending.pop()
        total += len(current)
        if total > budget:
            return total
        for item in current.values() if isinstance(current, Mapping) else current:
            if isinstance(item, str):
                total += len(item) >> 5
            elif isinstance(item, _COLLECTIONS):
                pending.append(item)
    return total


def _walk(ctx: _RenderContext, value: Any) -> None:
    """Count the items a filter is about to go through as loop iterations."""
    if isinstance(value, Undefined):
        return
    try:
        size = len(value)
    except TypeError:
        size = 0
    if size:
        ctx.iterate(size)
    else:
        ctx.step()


# --- Turning values into text -----------------------------------------------------------------

_WRITABLE: Final = (int, float, Decimal, date, time_of_day, timedelta, uuid.UUID)


def _fail_undefined(value: Undefined) -> NoReturn:
    value._fail_with_undefined_error()


def _text(value: Any) -> str:
    """``value`` as text, for the values a template may write out; refused for the rest (lists,
    mappings, macros, functions...), whose text would be Python's (or huge)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "None"
    if isinstance(value, _WRITABLE):
        try:
            return str(value)
        except ValueError:  # an integer beyond Python's digit limit
            raise _Refused("a number is too large to write out") from None
    if isinstance(value, Undefined):
        _fail_undefined(value)
    raise _Refused(_cannot_write(value))


def _cannot_write(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping cannot be written out as text: write one of its fields, like visit.date"
    if isinstance(value, Macro):
        return "a macro cannot be written out as text: call it, like name()"
    if isinstance(value, Iterable):
        return "a list cannot be written out as text: use |join(', ') to write its items"
    return f"a value of type {type(value).__name__!r} cannot be written out as text"


def _writable_size(value: Any, conversion: str, markup: bool) -> int:
    """At most how many characters a ``%`` or ``format()`` conversion writes for ``value``
    (besides its width and precision); refused for values that cannot be written out."""
    if isinstance(value, str):
        if conversion in ("r", "a"):
            return 10 * len(value) + 2
        return 5 * len(value) if markup else len(value)
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() + 3
    if isinstance(value, float):
        return 330
    if isinstance(value, Decimal):
        if value.is_finite() and abs(value.adjusted()) > _MAX_DIGITS:
            raise _Refused(f"a number has more than {_MAX_DIGITS} digits")
        return len(value.as_tuple().digits) + _MAX_DIGITS + 10
    if isinstance(value, _WRITABLE):
        return 2 * len(repr(value)) + len(str(value))
    if isinstance(value, Undefined):
        _fail_undefined(value)
    raise _Refused(_cannot_write(value))


# --- printf-style formatting: `'%5d' % x` and |format -----------------------------------------

_PRINTF_SPEC: Final = re.compile(r"[#0\- +]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?[hlL]?(.)?", re.DOTALL)


def _format_number(digits: str, limit: int) -> int:
    if digits == "*":
        raise _Refused("'*' widths are not supported in a format: write the width itself")
    if not digits:
        return 0
    if len(digits) > 9 or int(digits) > limit:
        raise _Refused(f"a width or precision in a format is larger than {limit}")
    return int(digits)


def _printf_specs(fmt: str, limit: int) -> Iterator[tuple[str | None, int, str]]:
    """Each conversion of a ``%`` format: its mapping key, width plus precision and type, parsed
    the way Python parses them (a key in balanced parentheses, flags, width, precision, length
    modifier, type)."""
    end = len(fmt)
    position = 0
    while (start := fmt.find("%", position)) != -1:
        index = start + 1
        key = None
        if index < end and fmt[index] == "(":
            depth = 1
            close = index + 1
            while close < end and depth:
                if fmt[close] == "(":
                    depth += 1
                elif fmt[close] == ")":
                    depth -= 1
                close += 1
            if depth:
                return  # an unclosed key: Python refuses the format itself
            key = fmt[index + 1 : close - 1]
            index = close
        match = _PRINTF_SPEC.match(fmt, index)
        assert match is not None  # every part of the pattern is optional
        size = _format_number(match.group(1), limit) + _format_number(match.group(2) or "", limit)
        yield key, size, match.group(3) or ""
        position = match.end()


def _printf(limit: int, fmt: str, args: Any) -> str:
    """``fmt % args``, refused when its result could be longer than ``limit`` characters or when
    it would write out something that is not text, a number or a date."""
    markup = isinstance(fmt, Markup)
    positional = args if isinstance(args, tuple) else (args,)
    used = 0
    bound = len(fmt)
    for key, size, conversion in _printf_specs(fmt, limit):
        if conversion == "%":
            continue
        if key is not None:
            value = args[key]
        elif used < len(positional):
            value = positional[used]
            used += 1
        else:
            break  # too few arguments: Python says so below
        bound += size + _writable_size(value, conversion, markup)
    if bound > limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    result: str = fmt % args
    return result


# --- str.format and the text methods that take a size -----------------------------------------

_FORMAT_DIGITS: Final = re.compile(r"\d+")  # str.format widths may be written in any script's digits


class _Formatter(SandboxedFormatter):
    """Jinja's sandboxed ``str.format``, which also bounds widths, precisions and the total
    length, and writes out only text, numbers and dates."""

    def __init__(self, sandbox: _Sandbox, **kwargs: Any) -> None:
        super().__init__(sandbox, **kwargs)
        self._limit = sandbox.max_output
        self._written = 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            _writable_size(value, conversion, False)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        for digits in _FORMAT_DIGITS.findall(format_spec):
            if len(digits) > 9 or int(digits) > self._limit:
                raise _Refused(f"a width or precision in a format is larger than {self._limit}")
        if not isinstance(value, str):
            _writable_size(value, "s", False)
        result = super().format_field(value, format_spec)
        self._written += len(result)
        if self._written > self._limit:
            raise _Refused(f"the template builds a text longer than {self._limit} characters")
        return result


class _EscapeFormatter(_Formatter, EscapeFormatter):
    """:class:`_Formatter` for ``Markup.format``, which escapes what it writes."""


def _format_method(sandbox: _Sandbox, owner: str, is_map: bool) -> Callable[..., str]:
    def format_text(*args: Any, **kwargs: Any) -> str:
        if is_map:
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            kwargs, args = args[0], ()
        formatter: _Formatter
        if isinstance(owner, Markup):
            formatter = _EscapeFormatter(sandbox, escape=owner.escape)
        else:
            formatter = _Formatter(sandbox)
        return type(owner)(formatter.vformat(owner, args, kwargs))

    return format_text


def _width_method(limit: int, method: Callable[..., str]) -> Callable[..., str]:
    def padded(width: Any, *rest: Any) -> str:
        if isinstance(width, int) and width > limit:
            raise _Refused(f"the template builds a text longer than {limit} characters")
        return method(width, *rest)

    return padded


def _replaced_size(text: str, old: str, new: str, count: int) -> int:
    occurrences = text.count(old) if old else len(text) + 1
    if count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


def _replace_method(limit: int, owner: str, method: Callable[..., str]) -> Callable[..., str]:
    def replace(old: Any, new: Any, count: Any = -1) -> str:
        if isinstance(owner, Markup):
            old_text, new_text = escape(old), escape(new)
        else:
            old_text, new_text = old, new
        if isinstance(old_text, str) and isinstance(new_text, str) and isinstance(count, int):
            if _replaced_size(owner, old_text, new_text, count) > limit:
                raise _Refused(f"the template builds a text longer than {limit} characters")
        return method(old, new, count)

    return replace


def _join_method(limit: int, owner: str, method: Callable[..., str]) -> Callable[..., str]:
    def join(iterable: Any) -> str:
        items = list(iterable)
        if isinstance(owner, Markup):
            items = [item if hasattr(item, "__html__") else escape(_text(item)) for item in items]
        if all(isinstance(item, str) for item in items):
            size = sum(map(len, items)) + len(owner) * max(len(items) - 1, 0)
            if size > limit:
                raise _Refused(f"the template builds a text longer than {limit} characters")
        return method(items)

    return join


# --- Methods a template may call --------------------------------------------------------------

_TEXT_METHODS: Final = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
        "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable",
        "isspace", "istitle", "isupper", "lower", "lstrip", "partition", "removeprefix",
        "removesuffix", "rfind", "rindex", "rpartition", "rsplit", "rstrip", "split",
        "splitlines", "startswith", "strip", "swapcase", "title", "upper",
        # Markup's own
        "striptags", "unescape",
    }
)  # fmt: skip
_MAPPING_METHODS: Final = frozenset({"items", "keys", "values", "get"})
_LIST_METHODS: Final = frozenset({"index", "count"})
_LOOP_METHODS: Final = frozenset({"cycle", "changed"})
_LOOP_ATTRIBUTES: Final = _LOOP_METHODS | {
    "index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
    "previtem", "nextitem",
}  # fmt: skip
"""``loop.index`` and the rest of the loop variable's documented attributes."""
_NO_METHODS: Final[frozenset[str]] = frozenset()


def _methods(obj: Any) -> frozenset[str]:
    if isinstance(obj, str):
        return _TEXT_METHODS
    if isinstance(obj, Mapping):
        return _MAPPING_METHODS
    if isinstance(obj, list | tuple):
        return _LIST_METHODS
    if isinstance(obj, LoopContext):
        return _LOOP_METHODS
    return _NO_METHODS


def _kind(obj: Any) -> str:
    if isinstance(obj, str):
        return "a text"
    if isinstance(obj, bool | int | float | Decimal):
        return "a number"
    if isinstance(obj, Mapping):
        return "a mapping"
    if isinstance(obj, list | tuple):
        return "a list"
    if isinstance(obj, LoopContext):
        return "loop"
    if isinstance(obj, Macro):
        return "a macro"
    return f"a value of type {type(obj).__name__!r}"


# --- The environment --------------------------------------------------------------------------


def _make_range(limit: int) -> Callable[..., range]:
    def range_(*args: Any) -> range:
        for arg in args:
            if isinstance(arg, Undefined):
                _fail_undefined(arg)
        numbers = range(*args)
        try:
            too_long = len(numbers) > limit
        except OverflowError:
            too_long = True
        if too_long:
            raise _Refused(f"range() may give at most {limit} numbers")
        return numbers

    return range_


@pass_context
def _finalize(ctx: _RenderContext, value: Any) -> Any:
    """What ``{{ value }}`` writes: text as it is, other values through :func:`_text`."""
    if isinstance(value, str):
        return value
    return ctx.built(_text(value))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with this module's rules and ``limits``."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    context_class = _RenderContext

    def __init__(self, autoescape: bool, limits: TemplateLimits) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=autoescape,
            keep_trailing_newline=True,
            finalize=_finalize,
            cache_size=0,
            auto_reload=False,
        )
        self.max_output = limits.max_output_chars
        self.max_iterations = limits.max_iterations
        self.max_seconds = limits.max_seconds
        self.max_text = limits.max_output_chars * _TEXT_FACTOR
        self.globals.clear()
        self.globals["range"] = _make_range(limits.max_iterations)
        self.filters = dict(_FILTERS)
        self.tests = dict(_TESTS)

    def concat(self, parts: Iterable[str]) -> str:
        """Join the output of a template or of a macro, ``{% set %}`` or ``{% filter %}`` block,
        refused before joining when it would be too long."""
        if not isinstance(parts, list):
            parts = list(parts)
        if sum(map(len, parts)) > self.max_output:
            raise _Refused(f"the output is longer than {self.max_output} characters")
        return "".join(parts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A mapping's own keys come first, so that visit.items is the data, not dict.items.
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif type(obj) is LoopContext and attribute in _LOOP_ATTRIBUTES:
            return getattr(obj, attribute)  # known to be safe, and used in loops: made quick
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, tuple) and _weight(argument, self.max_iterations) > self.max_iterations:
            # Hashing a key made of a tuple repeated inside itself would never end.
            raise _Refused(f"a key larger than {self.max_iterations} items")
        return super().getitem(obj, argument)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or attr in _methods(obj)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        return self.undefined(
            f"{attribute!r} is not allowed on {_kind(obj)}", name=attribute, obj=obj, exc=SecurityError
        )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Text methods whose result size depends on their arguments, made safe; ``None`` for
        everything else."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        name = value.__name__
        if name in ("format", "format_map"):
            return _format_method(self, owner, name == "format_map")
        if name in ("center", "ljust", "rjust", "zfill"):
            return _width_method(self.max_output, value)
        if name == "replace":
            return _replace_method(self.max_output, owner, value)
        if name == "join":
            return _join_method(self.max_output, owner, value)
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        ctx: _RenderContext = context  # type: ignore[assignment]
        if isinstance(obj, Macro | LoopContext):
            ctx.iterate(1)
            if ctx.depth >= _MAX_DEPTH:
                raise _Refused(f"macros or recursive loops call each other more than {_MAX_DEPTH} deep")
            if isinstance(obj, LoopContext) and args:
                args = (_counted(ctx, args[0]), *args[1:])
            ctx.depth += 1
            try:
                return super().call(context, obj, *args, **kwargs)
            finally:
                ctx.depth -= 1
        # list.index(x), dict.get(x), loop.changed(x)... compare or hash their arguments.
        ctx.weigh(getattr(obj, "__self__", None))
        for arg in args:
            ctx.weigh(arg)
        for name, arg in kwargs.items():
            if name not in ("_loop_vars", "_block_vars"):  # Jinja's own
                ctx.weigh(arg)
        ctx.step()
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, str | list | tuple):
            ctx.built(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        ctx: _RenderContext = context  # type: ignore[assignment]
        limit = self.max_output
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                    raise _Refused(f"a number would have more than {_MAX_DIGITS} digits")
                return left * right
            times, sequence = (right, left) if isinstance(right, int) else (left, right)
            if isinstance(times, int) and isinstance(sequence, str | list | tuple):
                if len(sequence) * max(times, 0) > limit:
                    raise _Refused(_too_big(sequence, limit))
                if not isinstance(sequence, str) and times > 1:
                    # [big_list] * 100000 is small, but comparing it is not.
                    if _weight(sequence, self.max_iterations) * times > self.max_iterations:
                        raise _Refused(
                            f"the template builds a list of more than {self.max_iterations} values"
                        )
                return ctx.built(left * right)
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                if len(left) + len(right) > limit:
                    raise _Refused(_too_big(left, limit))
                return ctx.built(self.binop_table["+"](left, right))
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                if right * math.log2(abs(left)) > _MAX_INT_BITS:
                    raise _Refused(f"a number would have more than {_MAX_DIGITS} digits")
        elif operator == "%" and isinstance(left, str):
            return ctx.built(_printf(limit, left, right))
        return self.binop_table[operator](left, right)


# --- Filters ----------------------------------------------------------------------------------


def _text_filter(transform: Callable[[Any], str]) -> Callable[..., str]:
    @pass_context
    def text_filter(ctx: _RenderContext, value: Any) -> str:
        result: str = ctx.built(transform(_text(value)))
        return result

    return text_filter


def _walking(function: Callable[..., Any], compares: bool = False) -> Callable[..., Any]:
    """One of Jinja's filters that go through a collection, counting its items as iterations
    and, for those that compare them (``compares``), weighing it."""
    passes = getattr(getattr(function, "jinja_pass_arg", None), "name", None)

    @pass_context
    def walking(ctx: _RenderContext, value: Any, *args: Any, **kwargs: Any) -> Any:
        if compares and isinstance(value, Iterator):
            value = list(value)  # to weigh its items before comparing them
        _walk(ctx, value)
        if compares:
            ctx.weigh(value)
        if passes == "context":
            return function(ctx, value, *args, **kwargs)
        if passes == "environment":
            return function(ctx.environment, value, *args, **kwargs)
        return function(value, *args, **kwargs)

    return walking


@pass_context
def _loop_filter(ctx: _RenderContext, iterable: Any) -> Iterator[Any]:
    return _counted(ctx, iterable)


@pass_context
def _weigh_filter(ctx: _RenderContext, value: Any) -> Any:
    ctx.weigh(value)
    return value


def _container(ctx: _RenderContext, value: Any) -> Any:
    """``value``, the right side of ``in``, weighed; an iterator is read into a list first."""
    if isinstance(value, Iterator):
        value = list(value)
    ctx.weigh(value)
    return value


@pass_context
def _container_filter(ctx: _RenderContext, value: Any) -> Any:
    return _container(ctx, value)


@pass_context
def _concat_filter(ctx: _RenderContext, values: tuple[Any, ...]) -> str:
    parts = [_text(value) for value in values]
    if ctx.eval_ctx.autoescape and any(hasattr(part, "__html__") for part in parts):
        parts = [escape(part) for part in parts]
        if sum(map(len, parts)) > ctx.sandbox.max_output:
            raise _Refused(_too_big("", ctx.sandbox.max_output))
        return ctx.built(Markup("").join(parts))  # type: ignore[no-any-return]
    if sum(map(len, parts)) > ctx.sandbox.max_output:
        raise _Refused(_too_big("", ctx.sandbox.max_output))
    return ctx.built("".join(parts))  # type: ignore[no-any-return]


@pass_context
def _subscript_slice(ctx: _RenderContext, value: Any, start: Any, stop: Any, step: Any) -> Any:
    result = value[start:stop:step]
    if isinstance(result, str | list | tuple):
        ctx.built(result)
    return result


@pass_context
def _trim(ctx: _RenderContext, value: Any, chars: str | None = None) -> str:
    return ctx.built(_text(value).strip(chars))  # type: ignore[no-any-return]


@pass_context
def _striptags(ctx: _RenderContext, value: Any) -> str:
    text = value.__html__() if hasattr(value, "__html__") else _text(value)
    return ctx.built(Markup(str(text)).striptags())  # type: ignore[no-any-return]


@pass_context
def _wordcount(ctx: _RenderContext, value: Any) -> int:
    text = _text(value)
    ctx.step(1 + (len(text) >> 10))
    return jinja_filters.do_wordcount(text)


@pass_context
def _urlencode(ctx: _RenderContext, value: Any) -> str:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return ctx.built(jinja_filters.do_urlencode(_text(value)))  # type: ignore[no-any-return]
    _walk(ctx, value)
    pairs = value.items() if isinstance(value, Mapping) else value
    texts = [(_text(key), _text(item)) for key, item in pairs]
    return ctx.built(jinja_filters.do_urlencode(texts))  # type: ignore[no-any-return]


@pass_context
def _escape(ctx: _RenderContext, value: Any) -> Markup:
    if hasattr(value, "__html__"):
        return escape(value)
    return ctx.built(escape(_text(value)))  # type: ignore[no-any-return]


@pass_context
def _forceescape(ctx: _RenderContext, value: Any) -> Markup:
    text = value.__html__() if hasattr(value, "__html__") else _text(value)
    return ctx.built(escape(str(text)))  # type: ignore[no-any-return]


def _safe(value: Any) -> Markup:
    return Markup(_text(value))


def _string(value: Any) -> str:
    return _text(value)


@pass_context
def _center(ctx: _RenderContext, value: Any, width: int = 80) -> str:
    limit = ctx.sandbox.max_output
    if isinstance(width, int) and width > limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    return ctx.built(_text(value).center(width))  # type: ignore[no-any-return]


@pass_context
def _indent(
    ctx: _RenderContext, value: Any, width: int | str = 4, first: bool = False, blank: bool = False
) -> str:
    text = _text(value)
    limit = ctx.sandbox.max_output
    if isinstance(width, int) and width > limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    indentation = len(width) if isinstance(width, str) else max(width, 0)
    lines = len(text.splitlines()) + 1
    if len(text) + lines * (indentation + 1) > limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    return ctx.built(jinja_filters.do_indent(text, width, first, blank))  # type: ignore[no-any-return]


@pass_context
def _wordwrap(
    ctx: _RenderContext,
    value: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = _text(value)
    separator = ctx.environment.newline_sequence if wrapstring is None else _text(wrapstring)
    limit = ctx.sandbox.max_output
    # Every line holds at least one character, and paragraphs are joined too.
    if len(text) + 2 * len(text) * len(separator) > _SCRATCH_FACTOR * limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    if isinstance(width, int) and width > 0 and break_long_words:
        cost = sum(len(word) ** 2 for word in text.split() if len(word) > width) // width
        if cost > _WRAP_COST:
            raise _Refused(f"wordwrap: the words are too long to break at a width of {width}")
    ctx.step(1 + (len(text) >> 10))
    wrapped = jinja_filters.do_wordwrap(
        ctx.environment, text, width, break_long_words, separator, break_on_hyphens
    )
    return ctx.built(wrapped)  # type: ignore[no-any-return]


@pass_context
def _truncate(
    ctx: _RenderContext,
    value: Any,
    length: int = 255,
    killwords: bool = False,
    end: str = "...",
    leeway: int | None = None,
) -> str:
    truncated = jinja_filters.do_truncate(
        ctx.environment, _text(value), length, killwords, _text(end), leeway
    )
    return ctx.built(truncated)  # type: ignore[no-any-return]


@pass_context
def _replace(ctx: _RenderContext, value: Any, old: Any, new: Any, count: int | None = None) -> str:
    if count is None:
        count = -1
    if not ctx.eval_ctx.autoescape:
        text, old_text, new_text = str(_text(value)), str(_text(old)), str(_text(new))
    else:
        if hasattr(old, "__html__") or (hasattr(new, "__html__") and not hasattr(value, "__html__")):
            text = escape(value) if hasattr(value, "__html__") else escape(_text(value))
        else:
            text = _text(value)
        old_text, new_text = _text(old), _text(new)
        if isinstance(text, Markup):  # Markup.replace escapes its arguments
            old_text, new_text = escape(old_text), escape(new_text)
    limit = ctx.sandbox.max_output
    if isinstance(count, int) and _replaced_size(text, old_text, new_text, count) > limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    return ctx.built(text.replace(old_text, new_text, count))  # type: ignore[no-any-return]


@pass_context
def _format(ctx: _RenderContext, value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise FilterArgumentError("format takes either positional or keyword arguments, not both")
    return ctx.built(_printf(ctx.sandbox.max_output, _text(value), kwargs or args))  # type: ignore[no-any-return]


@pass_context
def _join(ctx: _RenderContext, value: Any, d: Any = "", attribute: str | int | None = None) -> str:
    _walk(ctx, value)
    if attribute is not None:
        value = map(jinja_filters.make_attrgetter(ctx.environment, attribute), value)
    parts: list[str] = [_text(item) for item in value]
    separator = _text(d)
    if ctx.eval_ctx.autoescape and (
        hasattr(separator, "__html__") or any(hasattr(part, "__html__") for part in parts)
    ):
        separator = escape(separator)
        parts = [escape(part) for part in parts]
    else:
        separator = str(separator)
    limit = ctx.sandbox.max_output
    if sum(map(len, parts)) + len(separator) * max(len(parts) - 1, 0) > limit:
        raise _Refused(f"the template builds a text longer than {limit} characters")
    return ctx.built(separator.join(parts))  # type: ignore[no-any-return]


@pass_context
def _sum(ctx: _RenderContext, value: Any, attribute: str | int | None = None, start: Any = 0) -> Any:
    _walk(ctx, value)
    if attribute is not None:
        value = map(jinja_filters.make_attrgetter(ctx.environment, attribute), value)
    items = list(value)
    for item in (start, *items):
        if isinstance(item, Undefined):
            _fail_undefined(item)
        if not isinstance(item, int | float | Decimal):
            raise _Refused("sum can only add numbers")
    return sum(items, start)


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    if not isinstance(precision, int) or abs(precision) > _MAX_ROUND_PRECISION:
        raise _Refused(
            f"round() takes a precision between -{_MAX_ROUND_PRECISION} and {_MAX_ROUND_PRECISION}"
        )
    return jinja_filters.do_round(value, precision, method)  # type: ignore[arg-type]


@pass_context
def _batch(ctx: _RenderContext, value: Any, linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _walk(ctx, value)
    if isinstance(linecount, int) and linecount > ctx.sandbox.max_output:
        raise _Refused(f"the template builds a list of more than {ctx.sandbox.max_output} items")
    return jinja_filters.do_batch(value, linecount, fill_with)


@pass_context
def _slice(ctx: _RenderContext, value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _walk(ctx, value)
    if isinstance(slices, int) and slices > 0:
        ctx.iterate(slices)
    return jinja_filters.sync_do_slice(value, slices, fill_with)


_FILTERS: Final[dict[str, Callable[..., Any]]] = {
    # Text
    "capitalize": _text_filter(operator.methodcaller("capitalize")),
    "center": _center,
    "e": _escape,
    "escape": _escape,
    "forceescape": _forceescape,
    "format": _format,
    "indent": _indent,
    "join": _join,
    "lower": _text_filter(operator.methodcaller("lower")),
    "replace": _replace,
    "safe": _safe,
    "string": _string,
    "striptags": _striptags,
    "title": _text_filter(jinja_filters.do_title),
    "trim": _trim,
    "truncate": _truncate,
    "upper": _text_filter(operator.methodcaller("upper")),
    "urlencode": _urlencode,
    "wordcount": _wordcount,
    "wordwrap": _wordwrap,
    # Numbers
    "abs": abs,
    "filesizeformat": jinja_filters.do_filesizeformat,
    "float": jinja_filters.do_float,
    "int": jinja_filters.do_int,
    "round": _round,
    "sum": _sum,
    # Any value
    "d": jinja_filters.do_default,
    "default": jinja_filters.do_default,
    # Collections
    "batch": _batch,
    "count": len,
    "dictsort": _walking(jinja_filters.do_dictsort, compares=True),
    "first": jinja_filters.sync_do_first,
    "groupby": _walking(jinja_filters.sync_do_groupby, compares=True),
    "items": jinja_filters.do_items,
    "last": jinja_filters.do_last,
    "length": len,
    "list": _walking(jinja_filters.sync_do_list),
    "map": _walking(jinja_filters.sync_do_map),
    "max": _walking(jinja_filters.do_max, compares=True),
    "min": _walking(jinja_filters.do_min, compares=True),
    "reject": _walking(jinja_filters.sync_do_reject),
    "rejectattr": _walking(jinja_filters.sync_do_rejectattr),
    "reverse": _walking(jinja_filters.do_reverse),
    "select": _walking(jinja_filters.sync_do_select),
    "selectattr": _walking(jinja_filters.sync_do_selectattr),
    "slice": _slice,
    "sort": _walking(jinja_filters.do_sort, compares=True),
    "unique": _walking(jinja_filters.do_unique, compares=True),
    # Put in by the compiler (see _Rewriter)
    _LOOP_FILTER: _loop_filter,
    _CONCAT_FILTER: _concat_filter,
    _SLICE_FILTER: _subscript_slice,
    _WEIGH_FILTER: _weigh_filter,
    _CONTAINER_FILTER: _container_filter,
}


# --- Tests ------------------------------------------------------------------------------------


def _comparing_test(compare: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    @pass_context
    def comparing(ctx: _RenderContext, value: Any, other: Any) -> bool:
        ctx.weigh(value)
        ctx.weigh(other)
        return compare(value, other)

    return comparing


@pass_context
def _in_test(ctx: _RenderContext, value: Any, container: Any) -> bool:
    ctx.weigh(value)
    return value in _container(ctx, container)


def _name_test(names: Callable[[Any], Mapping[str, Any]]) -> Callable[..., bool]:
    # Jinja's own would hash any value.
    @pass_context
    def name_test(ctx: _RenderContext, value: Any) -> bool:
        return isinstance(value, str) and value in names(ctx.environment)

    return name_test


def _number_test(name: str, check: Callable[..., bool]) -> Callable[..., bool]:
    # Jinja's own would run `text % 2`: printf formatting, outside the operator checks.
    def number_test(value: Any, *args: Any) -> bool:
        if isinstance(value, str):
            raise TypeError(f"'{name}' tests numbers, not text")
        return check(value, *args)

    return number_test


def _case_test(check: Callable[[str], bool]) -> Callable[[Any], bool]:
    # Jinja's own would call str() on any value: text only here.
    def case_test(value: Any) -> bool:
        if isinstance(value, Undefined):
            _fail_undefined(value)
        return isinstance(value, str) and check(value)

    return case_test


def _tests() -> dict[str, Callable[..., Any]]:
    tests = cast(dict[str, Callable[..., Any]], dict(JINJA_TESTS))
    tests["odd"] = _number_test("odd", lambda value: value % 2 == 1)
    tests["even"] = _number_test("even", lambda value: value % 2 == 0)
    tests["divisibleby"] = _number_test("divisibleby", lambda value, number: value % number == 0)
    tests["lower"] = _case_test(str.islower)
    tests["upper"] = _case_test(str.isupper)
    tests["in"] = _in_test
    tests["filter"] = _name_test(lambda environment: environment.filters)
    tests["test"] = _name_test(lambda environment: environment.tests)
    for names, compare in (
        (("==", "eq", "equalto"), operator.eq),
        (("!=", "ne"), operator.ne),
        ((">", "gt", "greaterthan"), operator.gt),
        ((">=", "ge"), operator.ge),
        (("<", "lt", "lessthan"), operator.lt),
        (("<=", "le"), operator.le),
    ):
        for name in names:
            tests[name] = _comparing_test(compare)
    return tests


_TESTS: Final = _tests()


@functools.lru_cache(maxsize=32)
def _sandbox(autoescape: bool, limits: TemplateLimits) -> _Sandbox:
    return _Sandbox(autoescape, limits)


# --- Compiling --------------------------------------------------------------------------------


def _refuse_constructs(template: nodes.Template) -> None:
    """Refuse, with the line they are on, what a template may never do."""
    for statement in template.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise _Invalid(f"line {statement.lineno}: templates cannot include, import or extend other templates")
    for block in template.find_all(nodes.Block):
        raise _Invalid(f"line {block.lineno}: blocks are not supported (templates cannot extend each other)")
    for reference in template.find_all(nodes.NSRef):
        raise _Invalid(f"line {reference.lineno}: namespace() is not available")
    for getattr_node in template.find_all(nodes.Getattr):
        name = getattr_node.attr
        if name.startswith("_"):
            raise _Invalid(
                f"line {getattr_node.lineno}: {name!r} is not allowed: names starting with '_' are private"
            )


class _Rewriter(NodeTransformer):
    """Routes what Jinja compiles to plain Python through this module's checks: every
    ``{% for %}`` through the iteration count, every ``~`` and every slice through the size
    checks, and whatever is compared through :meth:`_RenderContext.weigh`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, _LOOP_FILTER, [], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter(nodes.Tuple(node.nodes, "load", lineno=node.lineno), _CONCAT_FILTER, [], node.lineno)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        node.expr = _weighed(node.expr)
        for operand in node.ops:
            operand.expr = _weighed(
                operand.expr, _CONTAINER_FILTER if operand.op in ("in", "notin") else _WEIGH_FILTER
            )
        return node

    def visit_Pair(self, node: nodes.Pair) -> nodes.Node:
        self.generic_visit(node)
        node.key = _weighed(node.key)  # hashed
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node
        bounds = [node.arg.start, node.arg.stop, node.arg.step]
        args: list[nodes.Expr] = [nodes.Const(None) if bound is None else bound for bound in bounds]
        return _filter(node.node, _SLICE_FILTER, args, node.lineno)


def _filter(node: nodes.Node, name: str, args: list[nodes.Expr], lineno: int) -> nodes.Filter:
    return nodes.Filter(node, name, args, [], None, None, lineno=lineno)


def _weighed(node: nodes.Expr, name: str = _WEIGH_FILTER) -> nodes.Expr:
    if isinstance(node, nodes.Const | nodes.TemplateData):
        return node  # as large as the source at most
    return _filter(node, name, [], node.lineno)


@dataclass(frozen=True)
class _Compiled:
    sandbox: _Sandbox
    globals: dict[str, Any]
    root: Callable[[Context], Iterator[str]]
    variables: frozenset[str]
    lineno: Callable[[int], int]
    """The template line of a line of the compiled Python code."""
    eval_ctx: EvalContext | None
    """One evaluation context for all renders of a template without ``{% autoescape %}``, the
    only statement that changes it while rendering; ``None``: a new one for each render."""


@functools.lru_cache(maxsize=256)
def _compile(source: str, autoescape: bool, limits: TemplateLimits) -> _Compiled:
    if len(source) > limits.max_source_chars:
        raise _Invalid(f"the template is longer than {limits.max_source_chars} characters")
    if not source.strip():
        raise _Invalid("the template is empty")
    sandbox = _sandbox(autoescape, limits)
    try:
        tree = sandbox.parse(source)
        _refuse_constructs(tree)
        changes_eval_ctx = any(
            True for _ in tree.find_all((nodes.EvalContextModifier, nodes.ScopedEvalContextModifier))
        )
        variables = frozenset(find_undeclared_variables(tree)) - sandbox.globals.keys()
        tree = _Rewriter().visit(tree)
        tree.set_environment(sandbox)
        compiled = sandbox.from_string(tree)
    except TemplateSyntaxError as exc:
        raise _Invalid(f"line {exc.lineno}: {exc.message}") from exc
    except TemplateError as exc:
        raise _Invalid(exc.message or "the template does not compile") from exc
    except (RecursionError, SyntaxError, MemoryError) as exc:
        # Expressions nested deeper than Jinja's parser or Python's compiler can follow.
        raise _Invalid("the template is nested too deeply") from exc
    return _Compiled(
        sandbox=sandbox,
        globals=dict(sandbox.globals),
        root=compiled.root_render_func,
        variables=variables,
        lineno=compiled.get_corresponding_lineno,
        eval_ctx=None if changes_eval_ctx else EvalContext(sandbox),
    )


def compile_template(
    source: str,
    *,
    field: str = "template",
    autoescape: bool = False,
    limits: TemplateLimits = TemplateLimits(),
) -> Template:
    """Compile a customer's template (compiled templates are cached).

    Raises :class:`~tidings.errors.InvalidTemplate` (naming ``field``) on a syntax error, an
    empty or whitespace-only source, a source longer than ``limits.max_source_chars``, or a
    construct the sandbox refuses (see the module's documentation). ``autoescape`` escapes HTML
    in the values written out, for HTML email; SMS templates leave it off.
    """
    try:
        compiled = _compile(source, autoescape, limits)
    except _Invalid as exc:
        raise InvalidTemplate(str(exc), field=field) from exc
    return Template(source, field, compiled)


class Template:
    """A compiled template. Build one with :func:`compile_template`."""

    __slots__ = ("_compiled", "field", "source", "variables")

    source: str
    field: str
    variables: frozenset[str]
    """The names the template reads from its context (a name it may only test with ``is
    defined`` or give a ``default`` is listed too)."""

    def __init__(self, source: str, field: str, compiled: _Compiled) -> None:
        self.source = source
        self.field = field
        self.variables = compiled.variables
        self._compiled = compiled

    def __repr__(self) -> str:
        return f"Template(field={self.field!r}, source={self.source[:40]!r})"

    def render(self, context: Mapping[str, Any]) -> str:
        """The template filled in from ``context``.

        Raises :class:`~tidings.errors.RenderFailed` (naming the template's field) when a
        variable is missing, the sandbox refuses something, anything inside the template fails
        (a division by zero, a wrong type...) or a limit is reached; its message says what went
        wrong in words, with the template line when known.
        """
        compiled = self._compiled
        sandbox = compiled.sandbox
        ctx = _RenderContext(sandbox, {**compiled.globals, **context}, None, {}, eval_ctx=compiled.eval_ctx)
        try:
            return sandbox.concat(compiled.root(ctx))
        except Exception as exc:
            raise RenderFailed(_explain(exc, compiled), field=self.field) from exc


def _explain(exc: Exception, compiled: _Compiled) -> str:
    """What went wrong in a render, in words, with the template line when known."""
    message: str
    if isinstance(exc, _Refused | SecurityError | UndefinedError):
        message = str(exc)
    elif isinstance(exc, TemplateError):
        message = exc.message or type(exc).__name__
    elif isinstance(exc, ZeroDivisionError):
        message = "division by zero"
    elif isinstance(exc, RecursionError):
        message = "the template calls itself too deeply"
    elif isinstance(exc, MemoryError):
        message = "the template needs too much memory"
    elif isinstance(exc, OverflowError):
        message = "a number is too large"
    elif isinstance(exc, KeyError):
        message = f"no key {exc.args[0]!r}" if exc.args else "a key is missing"
    else:
        message = str(exc) or type(exc).__name__
    line = None
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = compiled.lineno(traceback.tb_lineno)
        traceback = traceback.tb_next
    return f"line {line}: {message}" if line is not None else message

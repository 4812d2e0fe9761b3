"""JSON from strangers: every failure is a :class:`JsonRefused` with a reason, never whatever Python raises.

Python's ``json.loads`` raises ``JSONDecodeError`` on bad syntax, but a plain
``ValueError`` on an integer of more than 4,300 digits and ``RecursionError`` on
nesting about 1,000 levels deep; code that catches only the first crashes on
the others. :func:`loads` turns every failure into :class:`JsonRefused` and keeps
what it returns small enough for the rest of the worker to handle safely
(``json.dumps`` of a parked message, the database, logging). :func:`check_tree`
applies the stricter limits of an event envelope to a decoded value and says
where it broke them.

Reasons never repeat the input: it may be customer data, and reasons end up in
logs, HTTP answers and dead letters.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Nesting of an event envelope (objects and arrays; the envelope itself is level 1). Real events use 4.
MAX_DEPTH = 32
#: Digits of any integer in an event envelope: covers every 64-bit integer, signed or not.
MAX_INT_DIGITS = 20

#: What the decoder itself accepts in any message or body, before the envelope's own limits: beyond
#: these no message could be valid, and the value is refused without being built.
DECODE_MAX_DEPTH = 100
DECODE_MAX_NUMBER_CHARS = 1000

_INT_BOUND = 10**MAX_INT_DIGITS

Path = tuple[str | int, ...]


class JsonRefused(ValueError):
    """Bytes or a value refused: ``reason`` says why, ``path`` where (empty: the whole document).

    ``syntax`` is True when the input is not JSON at all (as opposed to JSON over a limit),
    ``depth`` when it is nested too deeply.
    """

    def __init__(self, reason: str, path: Path = (), *, syntax: bool = False, depth: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path
        self.syntax = syntax
        self.depth = depth


def too_deep(limit: int) -> str:
    """The reason for a document nested deeper than ``limit``."""
    return f"nested more than {limit} levels deep: too deep"


def _too_large(digits: int | None = None) -> str:
    if digits is None:
        return f"number too large (more than {MAX_INT_DIGITS} digits)"
    return f"number too large: {digits} digits (at most {MAX_INT_DIGITS})"


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > DECODE_MAX_NUMBER_CHARS:
        raise JsonRefused(_too_large(digits))
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > DECODE_MAX_NUMBER_CHARS:
        raise JsonRefused(f"number too long: {len(text)} characters (at most {DECODE_MAX_NUMBER_CHARS})")
    return float(text)


def _parse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number", syntax=True)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which copy wins: the producer and we could read two different events.
        raise JsonRefused("an object has the same key twice")
    return obj


# Built once: ``json.loads`` with hooks builds a decoder and its scanner on every call (about
# 2 µs, on every message a worker fetches). Like json's own default decoder, they are shared by
# threads: a scan keeps its state on the stack, and the scanner's key memo only interns strings.
_LONG = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant, object_pairs_hook=_object
)
_SHORT = json.JSONDecoder(parse_constant=_parse_constant, object_pairs_hook=_object)


def loads(data: bytes | bytearray | str, *, max_depth: int = DECODE_MAX_DEPTH) -> Any:
    """Decode UTF-8 JSON text; :class:`JsonRefused` (and nothing else) if it is not JSON we can take.

    JsonRefused: invalid UTF-8, invalid JSON (including ``NaN``/``Infinity``), an
    object with a repeated key, a number literal over
    :data:`DECODE_MAX_NUMBER_CHARS` characters, nesting over ``max_depth``.
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRefused(f"invalid UTF-8 at byte {exc.start}", syntax=True) from None
    else:
        text = data
    try:
        # A text no longer than the longest number we take cannot hold a longer one: the number
        # hooks would only repeat json's own parsing (most messages are a few hundred bytes).
        value = (_SHORT if len(text) <= DECODE_MAX_NUMBER_CHARS else _LONG).decode(text)
    except JsonRefused:
        raise
    except json.JSONDecodeError as exc:
        at = len(text[: exc.pos].encode("utf-8", "surrogatepass"))
        raise JsonRefused(f"invalid JSON at byte {at}", syntax=True) from None
    except RecursionError:
        # json's C scanner gives up near the interpreter's recursion limit, far above ``max_depth``.
        raise JsonRefused(too_deep(max_depth), depth=True) from None
    except Exception as exc:  # anything else json may raise on input we did not foresee
        raise JsonRefused(f"not decodable ({type(exc).__name__})") from None
    # Fewer brackets than the limit cannot nest deeper than it (the usual case: no walk needed).
    if text.count("[") + text.count("{") > max_depth and _depth_over(value, max_depth):
        raise JsonRefused(too_deep(max_depth), depth=True)
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: safe on any depth)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def check_tree(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Check a decoded value against the envelope's limits; :class:`JsonRefused` naming the first offence.

    Only JSON values (dict with string keys, list or tuple, str, int, float,
    bool, None); nesting at most ``max_depth``; integers of at most
    :data:`MAX_INT_DIGITS` digits; finite floats; strings that are valid
    Unicode (no lone surrogates, which cannot be stored or sent).
    """
    if _clean(value, max_depth):
        return  # the usual case; any doubt takes the full walk, which names the first offence
    _walk(value, max_depth)


def _walk(value: Any, max_depth: int) -> None:
    """:func:`check_tree` the long way: every node, with its path."""
    stack: list[tuple[Any, Path]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path)
        elif node is None or isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not -_INT_BOUND < node < _INT_BOUND:
                raise JsonRefused(_too_large(), path)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise JsonRefused("not a finite number", path)
        elif isinstance(node, dict | list | tuple):
            if len(path) + 1 > max_depth:
                raise JsonRefused(too_deep(max_depth), path, depth=True)
            if isinstance(node, dict):
                items: list[tuple[str | int, Any]] = []
                for key, child in node.items():
                    if not isinstance(key, str):
                        raise JsonRefused(f"an object key is a {type(key).__name__}, not a string", path)
                    _check_text(key, path)
                    items.append((key, child))
            else:
                items = list(enumerate(node))
            # Reversed: the stack pops the first child first, so the first offence in document order wins.
            stack.extend((child, (*path, key)) for key, child in reversed(items))
        else:
            raise JsonRefused(f"a {type(node).__name__} is not a JSON value", path)


def _clean(node: Any, room: int) -> bool:
    """True if :func:`check_tree` certainly accepts ``node`` with ``room`` levels of nesting left.

    A quick pass without paths, on exact types only (``str``, ``int``, ``float``,
    ``bool``, ``None``, ``dict``, ``list``): every event goes through it, and the
    full walk costs several times as much. False means "look closer", not "refused".
    """
    kind = type(node)
    if kind is dict:
        if room < 1:
            return False
        for key, child in node.items():
            if type(key) is not str or not _clean_text(key):
                return False
            if not _clean(child, room - 1):
                return False
        return True
    if kind is str:
        return _clean_text(node)
    if kind is list:
        return room >= 1 and all(_clean(child, room - 1) for child in node)
    if kind is int:
        return -_INT_BOUND < node < _INT_BOUND
    if kind is float:
        return math.isfinite(node)
    return node is None or kind is bool


def _clean_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str, path: Path) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRefused("not valid Unicode (a lone surrogate)", path) from None

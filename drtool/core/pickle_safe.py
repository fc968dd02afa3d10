"""Decode Dify's embedding-cache values (a pickled `list[float]`) without ever running the unpickler.

`pickle.loads` on bytes from a database executes whatever the bytes ask for (`os.system` through GLOBAL/STACK_GLOBAL
+ REDUCE). This module never calls the unpickler: it parses the opcode stream with `pickletools.genops` (a parser,
no effects) and accepts only the opcodes that build ONE flat list of numbers, refusing anything that names a
global, calls, builds objects, references the memo or nests containers. The values are taken from the parsed
opcode arguments, so a refused pickle has had no effect at all.
"""

from __future__ import annotations

import pickletools

_FRAMING = frozenset({"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "MARK"})
_NUMBERS = frozenset({"BINFLOAT", "FLOAT", "BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1"})
_LIST_OPEN = frozenset({"EMPTY_LIST", "LIST"})
_APPEND = frozenset({"APPEND", "APPENDS"})


class UnsafePickle(ValueError):
    """The bytes are not a plain pickled list of floats; nothing in them was executed."""


def loads_float_list(data: bytes | bytearray | memoryview, *, max_items: int = 1 << 16) -> list[float]:
    """Return the floats of a pickled flat list, or raise UnsafePickle (never executes the pickle)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UnsafePickle(f"expected bytes, got {type(data).__name__}")
    values: list[float] = []
    lists = 0
    stopped = False
    try:
        for opcode, arg, _pos in pickletools.genops(bytes(data)):
            name = opcode.name
            if stopped:
                raise UnsafePickle("data after STOP")
            if name == "STOP":
                stopped = True
            elif name in _LIST_OPEN:
                lists += 1
                if lists > 1:
                    raise UnsafePickle("more than one list (nested containers are not accepted)")
            elif name in _NUMBERS:
                values.append(float(arg))  # type: ignore[arg-type]
                if len(values) > max_items:
                    raise UnsafePickle(f"more than {max_items} values")
            elif name not in _FRAMING and name not in _APPEND:
                raise UnsafePickle(f"pickle opcode {name} is not allowed: only a flat list of floats is accepted")
    except UnsafePickle:
        raise
    except Exception as exc:  # genops parses only; a malformed stream lands here
        raise UnsafePickle(f"not a valid pickle: {exc}") from None
    if not stopped or lists != 1:
        raise UnsafePickle("the pickle does not hold exactly one complete list")
    return values

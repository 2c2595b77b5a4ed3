"""Hand freed memory back to the system after a pass.

A pass unpacks, applies and compares thousands of objects and then drops them (the load
and render happen in a child process, see ``prepare``), but glibc's allocator keeps the
freed pages in the process. ``malloc_trim`` returns what it can (Python's own arenas stay
while any object in them lives). Elsewhere (musl, macOS, no ctypes) this does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
with contextlib.suppress(ImportError, OSError, AttributeError):
    import ctypes
    import ctypes.util

    _function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    _function.argtypes = [ctypes.c_size_t]
    _trim = _function


def release_free_memory() -> None:
    if _trim is not None:
        _trim(0)

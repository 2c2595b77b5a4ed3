"""Hand freed memory back to the system after a pass.

A pass parses, renders and lists thousands of objects and then drops them, but glibc's
allocator keeps the freed pages in the process, so a daemon idles at the size of its
largest pass. ``malloc_trim`` returns them; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
with contextlib.suppress(OSError, AttributeError):
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim


def release_free_memory() -> None:
    gc.collect()
    if _trim is not None:
        _trim(0)

"""The process-wide default memory, held where the lowest layers can reach it.

The design summary's module-level API (`memory_manager`, the profile functions) acts on "the"
memory of the process. This module only holds it: `caller_memory.memory` registers how to
build it from the default settings (on first use) when the package is imported, so that the
modules the default is made of never import the module that makes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caller_memory.memory import CallerMemory

_lock = threading.Lock()
_memory: CallerMemory | None = None
_factory: Callable[[], CallerMemory] | None = None


def register_factory(factory: Callable[[], CallerMemory]) -> None:
    """How to build the default memory when it is first needed."""
    global _factory
    _factory = factory


def current() -> CallerMemory:
    """The default memory, built on first use."""
    global _memory
    with _lock:
        if _memory is None:
            if _factory is None:  # pragma: no cover - `import caller_memory` registers it
                raise RuntimeError("import caller_memory before using the default memory")
            _memory = _factory()
        return _memory


def replace(memory: CallerMemory | None) -> CallerMemory | None:
    """Install `memory` as the default (None: build one on next use); returns the previous."""
    global _memory
    with _lock:
        previous, _memory = _memory, memory
    return previous

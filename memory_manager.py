"""The design summary's `memory_manager` module: `memory_manager.store(...)` and the rest.

`memory_manager` is the manager of the process-wide default `CallerMemory`
(`caller_memory.default_memory()`): the same object as `caller_memory.memory_manager`.
"""

from caller_memory.manager import MemoryManager, memory_manager

__all__ = ["MemoryManager", "memory_manager"]

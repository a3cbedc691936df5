"""A memory budget for one CLI process: a clear error instead of the kernel's OOM killer.

Why: a process the kernel kills for memory (exit 137) cannot say anything, and leaves the user with
no idea what happened.  Under an ``RLIMIT_DATA`` budget an allocation that would cross it fails inside
the process instead — NumPy and onnx raise ``MemoryError``, onnxruntime an allocation error — and the
CLI turns that into one line and exit 2.  ``RLIMIT_DATA`` counts heap and private writable mappings,
not the read-only mappings of memory-mapped weights, so a model larger than memory can still be read.

The default is 90 % of the memory available when the command starts: it only ever fires where the
kernel would otherwise have killed the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource

#: Fraction of the available memory the default budget allows.
DEFAULT_FRACTION = 0.9


def available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def apply(limit_bytes: int | None = None) -> int | None:
    """Set the process's data budget to ``limit_bytes`` (default: 90 % of what is available now) and
    return it; None when the platform offers neither a limit nor a way to size it.  Never raises the
    hard limit an administrator set."""
    if limit_bytes is None:
        available = available_bytes()
        if available is None:
            return None
        limit_bytes = int(available * DEFAULT_FRACTION)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))
    return limit_bytes


def describe(limit_bytes: int | None) -> str:
    return "the memory budget" if limit_bytes is None else f"the memory budget of {limit_bytes / 2**30:.1f} GiB"


def headroom() -> int | None:
    """Bytes the data budget still allows this process (None: no budget, or no way to tell)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return None
    used = _data_bytes()
    return None if used is None else max(0, soft - used)


#: Data budget left (bytes) below which work stays on one thread (:func:`room_for_threads`).
THREADS_HEADROOM_BYTES = 1 << 30


def room_for_threads() -> bool:
    """Whether extra threads may run: no budget, or at least ``THREADS_HEADROOM_BYTES`` of it left.

    Why ask: every thread brings a stack, and onnxruntime's threads a malloc arena each, all counted
    against the ``RLIMIT_DATA`` budget; a 0.4 GiB ``--memory-limit`` prune that one thread fits failed
    with four.  Under a tight budget, speed gives way.
    """
    left = headroom()
    return left is None or left >= THREADS_HEADROOM_BYTES


def _data_bytes() -> int | None:
    """``VmData`` of this process: what ``RLIMIT_DATA`` counts."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))
    except (OSError, StopIteration):
        return None


def ensure(nbytes: int, what: str) -> None:
    """Raise ``MemoryError`` when ``nbytes`` more would not fit the budget.

    Why: protobuf (upb) cannot report a failed allocation — it crashes the process — so work that
    builds large messages (a single-file save copies every weight into the proto) asks first.
    """
    left = headroom()
    if left is not None and nbytes > left:
        soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
        raise MemoryError(f"{what} needs {nbytes / 2**30:.2f} GiB more than {describe(soft)} leaves")


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Why: sessions made and dropped one after another (blocks, :mod:`onnxprune.runtime.blockwise`) free their
    buffers, but glibc keeps freed chunks below its adaptive mmap threshold in the heap, so the resident size
    would keep the high-water mark of the largest one.
    """
    trim = getattr(_libc(), "malloc_trim", None)  # glibc only: an optimisation
    if trim is not None:
        trim(0)

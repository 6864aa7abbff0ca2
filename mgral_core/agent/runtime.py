"""Where the agent runs: CPU bfloat16 support, torch intra-op threads and the glibc heap kept while it trains."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def bfloat16_matmul_is_fast() -> bool:
    """True when this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX); elsewhere torch
    emulates them, slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)

_threads_lock = threading.Lock()
_threads_stack: list[list[int]] = []  # one entry per open intra_op_threads block of this process: [n]
_threads_outside = 1  # the count before the first open block


@contextmanager
def intra_op_threads(n: int = 1) -> Iterator[None]:
    """Run torch on `n` intra-op threads, then restore the previous count.

    The step loops issue tens of thousands of small ops; on this 2-core machine a second intra-op
    thread made them over 30x slower whenever the other core was busy (OpenMP workers spin-wait for
    each other), and about 1.5-2x faster on large pools when it was idle.

    The count is process-wide, so blocks open at once in several threads (head-proxy records of a
    thread pool) share it: a block that ends while others are open leaves the count of the newest one
    still open, and the count from before the first block comes back when the last one ends.
    """
    global _threads_outside
    entry = [n]
    with _threads_lock:
        if not _threads_stack:
            _threads_outside = torch.get_num_threads()
        _threads_stack.append(entry)
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _threads_lock:
            del _threads_stack[next(i for i, e in enumerate(_threads_stack) if e is entry)]  # this block's own
            torch.set_num_threads(_threads_stack[-1][0] if _threads_stack else _threads_outside)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int) -> int:
    """params.yaml agent.threads -> torch intra-op threads for the agent: 0 means one per available core."""
    if threads < 0:
        raise ValueError(f"agent threads must be >= 0 (0 = one per core), got {threads}")
    return threads or available_cores()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_heap_lock = threading.Lock()
_heap_users = 0


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def retained_heap() -> Iterator[None]:
    """Let freed memory be reused inside the process while the agent runs, then hand it back.

    Every training iteration allocates and frees the same large arrays (tens to hundreds of MB).
    glibc serves such blocks with fresh mmap pages, so each iteration page-faults over all of them
    again (about a fifth of an iteration at VOC scale). Inside this context glibc neither mmaps nor
    trims, so freed blocks are reused; on exit its defaults are restored and malloc_trim returns the
    memory. Numerics are untouched. A no-op without glibc; helps the main thread's heap only (other
    threads' large blocks are still mmapped). Re-entrant and thread-safe.
    """
    global _heap_users
    libc = _glibc()
    if libc is None:
        yield
        return
    with _heap_lock:
        _heap_users += 1
        if _heap_users == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                for parameter, value in _GLIBC_DEFAULTS.items():
                    libc.mallopt(parameter, value)
                libc.malloc_trim(0)

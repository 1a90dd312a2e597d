"""Process settings for CPU runs: keep freed memory in the allocator instead of returning it to the system.

glibc's malloc hands large blocks (from 128 KB, rising to 32 MB) back to the kernel when they are freed and
maps them again on the next request, so every decode step and training step that allocates its buffers anew
pays for zeroed pages again: the quickstart spent 1,184 s of system time (373 million page faults) in 1,638 s of
wall time.  Keeping those blocks cut a CTranslate2 rollout of 16 x 224 tokens from 36.7 s to 30.7 s
(system time 8.7 s -> 3.0 s).  The cost: up to ~0.5 GB freed after a peak stays with the process.

Opt-in, because it costs memory: ``TAGPR_MALLOC=keep``.  Measured on the quickstart (2 cores): glibc's defaults
27 min 24 s and peak RSS 7.8 GB; ``keep`` 20 min 17 s and 11.6 GB (keeping *all* freed memory: 16.0 GB)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from typing import Any

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_done = False
DEFAULT_TOP_PAD = 128 << 10  # glibc's default (mallopt(3))
# after leaving: where glibc's own dynamic thresholds end up on 64-bit (mmap up to 32 MB, trim at twice that);
# any mallopt call switches the dynamic setting off for good, so leaving sets that end point explicitly (a
# 128 KB trim threshold with a 32 MB mmap threshold gave every later 4 MB allocation fresh page faults)
MMAP_AFTER, TRIM_AFTER = 32 << 20, 64 << 20
_depth = 0


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return None


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside: freed blocks up to 64 MB stay with the process (a decode loop that allocates its buffers anew each
    step then stops paying page faults for them); on leaving, the thresholds go back near glibc's and the
    kept memory is returned (``malloc_trim``).  Measured on a 48-user TagPR evaluation of 160-token chains with
    CTranslate2 (2 cores): 226 s -> 75 s, peak RSS 5.0 GB.  Used around CTranslate2 generation; a no-op where
    there is no glibc, when nested, and when ``TAGPR_MALLOC=keep`` already holds for the whole process."""
    global _depth
    libc = None if (_done or _depth) else _libc()
    _depth += 1
    try:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
            libc.mallopt(M_TRIM_THRESHOLD, 512 << 20)
            libc.mallopt(M_TOP_PAD, 64 << 20)
        yield
    finally:
        _depth -= 1
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_AFTER)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_AFTER)
            libc.mallopt(M_TOP_PAD, DEFAULT_TOP_PAD)
            libc.malloc_trim(0)


def keep_freed_memory() -> bool:
    """With ``TAGPR_MALLOC=keep``, raise glibc's mmap and trim thresholds for this process (once); False when
    not asked for or where there is no glibc malloc."""
    global _done
    if _done:
        return True
    if os.environ.get("TAGPR_MALLOC", "").lower() != "keep":
        return False
    libc = _libc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    # blocks up to 64 MB come from the heap and stay there; up to 512 MB free at its top is kept.  (Keeping
    # everything, 1 GB / never trim, was as fast but doubled the quickstart's peak RSS, 7.8 -> 16.0 GB.)
    ok = bool(mallopt(M_MMAP_THRESHOLD, 64 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 512 << 20))
    mallopt(M_TOP_PAD, 64 << 20)
    _done = ok
    return ok


def _status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM), or None where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_gb() -> float | None:
    """This process's peak resident memory so far (GB; VmHWM), or None where /proc is not there."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / (1 << 20)


class PeakRSS:
    """The peak resident memory (GB, ``.gb``) of this process during a ``with`` block.

    The process's own high-water mark (VmHWM: what ``/usr/bin/time`` and job schedulers report) is left as it
    is: when the block raised it, that is the block's peak, exactly; otherwise the block's peak is the largest
    RSS a sampler thread read (every ``interval`` seconds).  ``gb`` is None where there is no /proc."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.gb: float | None = None
        self._stop = threading.Event()
        self._max = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._max = max(self._max, _status_kb("VmRSS") or 0)

    def __enter__(self) -> PeakRSS:
        self._hwm0 = _status_kb("VmHWM")
        self._max = _status_kb("VmRSS") or 0
        self._thread = threading.Thread(target=self._sample, name="tagpr-peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        hwm = _status_kb("VmHWM")
        if hwm is None or self._hwm0 is None:
            return
        self._max = max(self._max, _status_kb("VmRSS") or 0)
        self.gb = (hwm if hwm > self._hwm0 else self._max) / (1 << 20)

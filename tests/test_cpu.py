"""Process-level CPU helpers: per-stage peak memory and the allocator window around CTranslate2 calls."""

import mmap
import sys
import time

import numpy as np
import pytest

from tagpr.cpu import PeakRSS, freed_memory_kept, peak_rss_gb

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _touch(mb: int) -> mmap.mmap:
    """``mb`` MB of fresh pages, touched (a malloc'd array could reuse memory the allocator kept from earlier)."""
    m = mmap.mmap(-1, mb << 20)
    np.frombuffer(m, dtype=np.uint8)[::4096] = 1
    return m


@linux
def test_peak_rss_of_a_block_without_resetting_the_process_high_water_mark():
    first = _touch(600)
    first.close()
    hwm = peak_rss_gb()
    with PeakRSS(interval=0.01) as block:  # below the process's peak so far: the sampler sees it
        m = _touch(300)
        time.sleep(0.1)
        m.close()
    assert peak_rss_gb() >= hwm  # the process's own peak (what /usr/bin/time reports) is not reset
    with PeakRSS() as quiet:
        pass
    assert 0.25 < block.gb - quiet.gb < 0.45
    with PeakRSS(interval=10.0) as top:  # a new process peak: read exactly from VmHWM, whatever the sampler missed
        m = _touch(900)
        m.close()
    assert top.gb == peak_rss_gb() and top.gb - quiet.gb > 0.8


def test_freed_memory_kept_is_reentrant_and_allocations_work_inside():
    with freed_memory_kept():
        with freed_memory_kept():
            x = np.ones(8 << 20 >> 3)
        assert float(x.sum()) == float(8 << 20 >> 3)

"""Process-level CPU helpers: per-stage peak memory and the allocator window around CTranslate2 calls."""

import mmap
import sys

import numpy as np
import pytest

from tagpr.cpu import freed_memory_kept, peak_rss_gb, reset_peak_rss

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


@linux
def test_peak_rss_window_sees_a_stage_peak_and_resets():
    assert reset_peak_rss()
    base = peak_rss_gb()
    # 400 MB of fresh pages, touched (a malloc'd array could reuse memory the allocator kept from earlier tests)
    m = mmap.mmap(-1, 400 << 20)
    np.frombuffer(m, dtype=np.uint8)[::4096] = 1
    high = peak_rss_gb()
    assert high - base > 0.35
    m.close()
    assert reset_peak_rss()
    after = peak_rss_gb()
    assert after < high - 0.3  # a new window starts at the current (smaller) RSS


def test_freed_memory_kept_is_reentrant_and_allocations_work_inside():
    with freed_memory_kept():
        with freed_memory_kept():
            x = np.ones(8 << 20 >> 3)
        assert float(x.sum()) == float(8 << 20 >> 3)

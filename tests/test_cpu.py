"""Process-level CPU helpers: per-stage peak memory and the allocator window around CTranslate2 calls."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tagpr.cpu import freed_memory_kept

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


_SCRIPT = """
import json, mmap, time
import numpy as np
from tagpr.cpu import PeakRSS, peak_rss_gb

def touch(mb):  # fresh pages, touched (a malloc'd array could reuse memory the allocator kept)
    m = mmap.mmap(-1, mb << 20)
    np.frombuffer(m, dtype=np.uint8)[::4096] = 1
    return m

first = touch(600); first.close()
hwm = peak_rss_gb()
with PeakRSS(interval=0.01) as block:  # below the process's peak so far: the sampler sees it
    m = touch(300); time.sleep(0.1); m.close()
kept = peak_rss_gb() >= hwm
with PeakRSS() as quiet:
    pass
with PeakRSS(interval=10.0) as top:  # a new process peak: read exactly from VmHWM, whatever the sampler missed
    m = touch(900); m.close()
print(json.dumps({"kept": kept, "block": block.gb, "quiet": quiet.gb, "top": top.gb, "hwm": peak_rss_gb()}))
"""


@linux
def test_peak_rss_of_a_block_without_resetting_the_process_high_water_mark():
    # in a fresh interpreter: this test process's own peak is whatever the tests before it reached
    res = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["kept"]  # the process's own peak (what /usr/bin/time reports) is not reset
    assert 0.25 < r["block"] - r["quiet"] < 0.45
    assert r["top"] == r["hwm"] and r["top"] - r["quiet"] > 0.8


def test_freed_memory_kept_is_reentrant_and_allocations_work_inside():
    with freed_memory_kept():
        with freed_memory_kept():
            x = np.ones(8 << 20 >> 3)
        assert float(x.sum()) == float(8 << 20 >> 3)

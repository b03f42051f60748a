"""topoctl.spec.rates: rates and sizes read as tc reads them (iproute2's lib/utils_math.c),
and the kernel's tbf arithmetic (net/sched/sch_tbf.c, sch_generic.c) done in integers.

The same functions are checked against the kernel and the tc binary, as root, in
tests/integration/test_tc.py."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topoctl.spec import rates
from topoctl.spec.rates import (
    canonical_burst,
    canonical_rate,
    default_burst,
    expressible,
    format_rate,
    format_size,
    kernel_ticks,
    parse_rate,
    parse_size,
    tbf_limit,
    tc_ticks,
)

# tc's table of rate units (lib/utils_math.c, `suffixes`), in bits per second
TC_RATE_UNITS = {
    "bit": 1, "kibit": 1024, "kbit": 1000, "mibit": 1024**2, "mbit": 10**6, "gibit": 1024**3, "gbit": 10**9,
    "tibit": 1024**4, "tbit": 10**12, "bps": 8, "kibps": 8 * 1024, "kbps": 8000, "mibps": 8 * 1024**2,
    "mbps": 8 * 10**6, "gibps": 8 * 1024**3, "gbps": 8 * 10**9, "tibps": 8 * 1024**4, "tbps": 8 * 10**12,
}
# tc's get_size64(): binary multiples, and bits for the *bit forms
TC_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
                 "kbit": 128, "mbit": 1024**2 // 8, "gbit": 1024**3 // 8}


@pytest.mark.parametrize("text, bits", [
    ("10mbit", 10_000_000),
    ("10Mbit", 10_000_000),  # units ignore case, as tc's strcasecmp()
    ("1gbit", 10**9),
    ("1.5mbit", 1_500_000),
    ("500kbit", 500_000),
    ("1kibit", 1024),
    ("2mibit", 2 * 1024**2),
    ("100kbps", 800_000),  # bytes per second
    ("10mbps", 80_000_000),  # megabytes: tc reads "mbps" as MBps
    ("10MBps", 80_000_000),
    ("1000", 1000),  # a bare number is bits per second
    ("8bit", 8),
    ("1e6bit", 10**6),
    ("2.5e3kbit", 2_500_000),
    (".5kbit", 500),
    ("1.kbit", 1000),
    ("0.0001bit", 0),  # fractions of a bit are dropped, as tc truncates
    ("100gbit", 10**11),
    ("1tbit", 10**12),
    (10_000_000, 10_000_000),  # an int from YAML: bits per second
    ("0", 0),
])
def test_parse_rate_examples(text, bits):
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text, size", [
    ("32kb", 32768),
    ("32KB", 32768),
    ("32k", 32768),
    ("1514", 1514),
    ("1514b", 1514),
    ("1mb", 1024**2),
    ("1m", 1024**2),
    ("1g", 1024**3),
    ("1mbit", 131072),  # 2**20 bits
    ("1kbit", 128),
    ("1gbit", 2**27),
    ("1.5k", 1536),
    ("0.5b", 0),
    (1514, 1514),
])
def test_parse_size_examples(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, why", [
    ("", "expected a number"),
    ("mbit", "expected a number"),
    ("10 mbit", "expected a number"),
    (" 10mbit", "expected a number"),
    ("-1mbit", "expected a number"),
    ("10mbits", "unknown unit 'mbits'"),
    ("10kb", "unknown unit 'kb'"),  # a size unit is no rate unit
    ("50%", "share of the link speed"),
    ("0x10", "expected a number"),
    ("inf", "expected a number"),
    ("nan", "expected a number"),
    ("1e400mbit", "out of range"),
    ("1" * 80, "too long"),
    (True, "expected text"),
    (-5, "negative"),
    (1.5, "expected text"),
    (None, "expected text"),
])
def test_parse_rate_refuses(text, why):
    with pytest.raises(ValueError, match=why):
        parse_rate(text)


@pytest.mark.parametrize("text, why", [
    ("32kbit/8", "SIZE/CELL"),
    ("32kib", "unknown unit 'kib'"),
    ("1tb", "unknown unit 'tb'"),  # tc has no tb either
    ("10mbps", "unknown unit 'mbps'"),
    ("", "expected a number"),
])
def test_parse_size_refuses(text, why):
    with pytest.raises(ValueError, match=why):
        parse_size(text)


@given(st.integers(0, 10**6), st.sampled_from(sorted(TC_RATE_UNITS)), st.randoms(use_true_random=False))
def test_parse_rate_reads_every_tc_unit_in_any_case(number, unit, rnd):
    spelled = "".join(c.upper() if rnd.random() < 0.5 else c for c in unit)
    assert parse_rate(f"{number}{spelled}") == number * TC_RATE_UNITS[unit]


@given(st.integers(0, 10**6), st.sampled_from(sorted(TC_SIZE_UNITS)))
def test_parse_size_reads_every_tc_unit(number, unit):
    assert parse_size(f"{number}{unit}") == number * TC_SIZE_UNITS[unit]


@given(st.integers(0, 2**70))
def test_format_rate_round_trips(bits):
    text = format_rate(bits)
    assert parse_rate(text) == bits
    assert len(text) <= len(f"{bits}bit")


@given(st.integers(0, 2**40))
def test_format_size_round_trips(size):
    assert parse_size(format_size(size)) == size


def test_format_examples():
    assert format_rate(10_000_000) == "10mbit"
    assert format_rate(1_500_000) == "1500kbit"
    assert format_rate(1001) == "1001bit"
    assert format_size(32768) == "32kb"
    assert format_size(1514) == "1514b"


@given(st.decimals(0, 10**6, places=3, allow_nan=False, allow_infinity=False),
       st.decimals(0, 10**6, places=3, allow_nan=False, allow_infinity=False),
       st.sampled_from(["bit", "kbit", "mbit", "kbps", "mibit"]))
def test_parse_rate_is_monotonic(a, b, unit):
    low, high = sorted((a, b))
    assert parse_rate(f"{low}{unit}") <= parse_rate(f"{high}{unit}")


# -- the kernel's arithmetic -------------------------------------------------------------------

def test_psched_ticks_are_what_proc_says():
    """tc's tc_core_init(): tick_in_usec = t2us / us2t * clock_res / 10**6, with t2us = us2t
    when clock_res is 10**9; TICKS_PER_SEC is that per second."""
    try:
        with open("/proc/net/psched") as f:
            t2us, us2t, clock_res, _ = (int(word, 16) for word in f.read().split())
    except OSError:
        pytest.skip("no /proc/net/psched")
    if clock_res == 10**9:
        t2us = us2t
    assert t2us / us2t * (clock_res / 10**6) * 10**6 == rates.TICKS_PER_SEC


@pytest.mark.parametrize("rate, burst, ticks, back", [
    (10_000_000, 1514, 18925, 1514),  # read back from the kernel after tc: 0x49ed ticks
    (10_000_000, 32768, 409600, 32768),
    (10**11, 32768, 40, 32000),  # 100gbit: a tick is 800 bytes; tc showed 0x28 ticks
    (123_456_789, 99_999, 101_248, 99_998),  # as read back from the kernel
])
def test_kernel_ticks_examples(rate, burst, ticks, back):
    assert kernel_ticks(rate, burst) == ticks
    assert canonical_burst(rate, burst) == back


def test_tc_ticks_and_limit_examples():
    assert tc_ticks(10_000_000, 1514) == 18925  # exact here; tc rounds up since 6.15
    assert tc_ticks(10_000_000, 1513) == 18913  # 18912.5 rounded up
    assert tbf_limit(10_000_000, 1514) == 64014  # what `tc ... latency 50ms` left in the kernel
    assert tbf_limit(10_000_000, 1514, 0) == 1514


def test_mult_shift_is_the_kernels():
    # psched_ratecfg_precompute__(): the loop stops when mult has its top bit set, or when the
    # factor 10**9 << shift reaches bit 63 (rates of terabits); mult / 2**shift ~ 10**9 / rate
    for rate in (1, 3, 125, 1_250_000, 123_456_789, 12_500_000_000, 2**40 + 7):
        mult, shift = rates._mult_shift(rate)
        assert mult < 2**32
        assert mult >= 2**31 or (10**9 << shift) >= 2**63
        assert mult == (10**9 << shift) // rate
        assert abs(mult / 2**shift - 10**9 / rate) <= 1 / 2**shift


RATES = st.integers(rates.MIN_RATE, 10**12)
BURSTS = st.integers(1, rates.U32)


@given(RATES, BURSTS)
def test_canonical_burst_is_at_most_the_burst_and_close_to_it(rate, burst):
    back = canonical_burst(rate, burst)
    assert back <= burst
    # lost: the kernel's multiply-shift (under 1 ns per ~2 s of bucket, plus 1 ns), the round
    # down to a 64 ns tick, and the round down to a byte
    R = rate // 8
    assert (burst - back) * 10**9 <= R * (64 + 2) + burst + 10**9


@given(RATES, BURSTS, BURSTS)
def test_canonical_burst_is_monotonic(rate, a, b):
    low, high = sorted((a, b))
    assert canonical_burst(rate, low) <= canonical_burst(rate, high)


@given(st.integers(0, 10**15))
def test_canonical_rate_is_whole_bytes(rate):
    back = canonical_rate(rate)
    assert back % 8 == 0 and rate - 8 < back <= rate


def test_exact_rates_lose_nothing():
    # where 10**9 / bytes-per-second is a whole number, the kernel's time of a burst is exact
    for rate in (8_000, 1_000_000, 10_000_000, 8 * 10**9 // 64):
        for burst in (1514, 3028, 32768, 1 << 20):
            if burst * 15_625_000 % (rate // 8) == 0:
                assert canonical_burst(rate, burst) == burst


# -- default_burst and expressible -------------------------------------------------------------

def test_default_burst_examples():
    assert default_burst(10_000_000) == 12_500  # 10 ms
    assert default_burst(1_000_000) == 3028  # two full frames beat 1250 bytes
    assert default_burst(10**9) == 1_250_000
    assert default_burst(1_000_000, mtu=9000) == 2 * 9014
    assert default_burst(8 * 10**13) == rates.U32  # 10 ms of 80 tbit do not fit 32 bits


@given(st.integers(1_000, 500 * 10**9), st.integers(68, 9000))
def test_default_burst_is_always_expressible(rate, mtu):
    assert expressible(rate, default_burst(rate, mtu), mtu) is None


@pytest.mark.parametrize("rate, burst, mtu, latency, why", [
    (7, 10_000, 1500, 50, "below 8bit"),
    (0, 10_000, 1500, 50, "below 8bit"),
    (8 * 2**64, 10_000, 1500, 50, "64-bit rate"),
    (10_000_000, 2**32, 1500, 50, "32-bit burst"),
    (10_000_000, 1513, 1500, 50, r"less than one full frame \(MTU 1500 \+ 14 = 1514 bytes\)"),
    (10_000_000, 9013, 9000, 50, "less than one full frame"),
    (8, 10_240, 1500, 50, "32-bit count of 64 ns ticks"),
    (80, 3_000, 1500, 50, "lasts 300 s"),  # 10 bytes/s: 300 s, past 274.9 s
    (10**12, 10**7, 1500, 50, "32-bit limit"),  # 1tbit for 50 ms: 6.25 GB
])
def test_expressible_reasons(rate, burst, mtu, latency, why):
    reason = expressible(rate, burst, mtu, latency)
    assert reason is not None
    assert re.search(why, reason), reason


@pytest.mark.parametrize("rate, burst, mtu", [
    (8, 1514, 1500),  # one byte per second: 1514 s, refused
    (80, 2_000, 1500),  # 200 s: kept
    (10_000_000, 1514, 1500),
    (10_000_000, 32768, 1500),
    (10**11, 32768, 1500),
    (500 * 10**9, 10**7, 1500),
    (8 * 11, 3028, 1500),  # 275 s at 11 bytes/s: just past the 274.9 s cap
])
def test_expressible_accepts_or_explains(rate, burst, mtu):
    seconds = burst / (rate // 8)
    reason = expressible(rate, burst, mtu)
    assert (reason is None) == (seconds * rates.TICKS_PER_SEC < rates.U32), reason


def test_expressible_at_the_tick_limit():
    # tc refuses a burst whose ticks reach 2**32 - 1 (iproute2 7.1); one tick less is kept
    rate = 8 * 15_625_000  # one byte per tick
    assert expressible(rate, rates.U32 - 1, 1500, 0) is None
    assert "ticks" in expressible(rate, rates.U32, 1500, 0)


def test_no_import_of_the_kernel():
    # pure: importing rates loads nothing of topoctl.kernel, .store or .run (the layers' contract
    # says so too; this catches a lazy import at call time)
    import subprocess
    import sys

    code = ("import sys; from topoctl.spec import rates; rates.expressible(10**7, 1514); rates.parse_rate('1mbit'); "
            "print([m for m in sys.modules if m.startswith(('topoctl.kernel', 'topoctl.store', 'topoctl.run', 'pyroute2'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))).stdout
    assert out.strip() == "[]"

"""The `rate` and `burst` keys of a veth end: text read as tc(8) reads it, and what the
kernel's tbf qdisc makes of the numbers.

Pure: no kernel, no files. The kernel side is topoctl/kernel/tc.py; it writes what these
functions predict, so a desired value computed here equals the one read back from the kernel.

Reading (iproute2's lib/utils_math.c, get_rate64() and get_size64(), matched on purpose):

- a rate is a decimal number and a unit, the unit matched without regard to case:
  bit, kbit, mbit, gbit, tbit (powers of 1000), kibit, mibit, gibit, tibit (powers of 1024),
  and the same in bytes per second: bps, kbps, mbps, gbps, tbps, kibps, mibps, gibps, tibps
  (so `mbps` is megaBYTES per second, 8 000 000 bit/s, as in tc, where the comparison ignores
  case: "MBps"). A bare number is bits per second (tc's "bit or a bare number");
- a size is a decimal number and a unit: b (or none) bytes; k, kb 1024; m, mb 1024**2; g, gb
  1024**3; kbit 128, mbit 1024**2/8, gbit 1024**3/8 bytes (binary multiples, as tc's sizes);
- the number may have a fraction and an exponent ("1.5mbit", "1e6bit"), as strtod() reads it;
  tc computes in doubles, this module exactly (fractions of a bit or byte are dropped, as tc
  truncates), so both agree except, possibly, by one unit on inputs whose double is not exact.
  What strtod() also takes and a file has no use for is refused: leading blanks, hex numbers,
  inf and nan, "%" rates (a share of the link speed), and tc's "SIZE/CELL" form of a burst.

What the kernel keeps (net/sched/sch_tbf.c, tbf_change() and tbf_dump(); as tc sends it, with
TCA_TBF_BURST):

- the rate in whole bytes per second (rate_bps // 8): a u64, in TCA_TBF_RATE64 from 2**32;
- the burst exactly, as the largest packet that may pass (max_size), never reported back; the
  bucket as a time, psched_l2t_ns() of the burst (the multiply and shift precomputed for the
  rate by psched_ratecfg_precompute()), reported in psched ticks of 64 ns (PSCHED_SHIFT 6,
  /proc/net/psched: 1000/64 ticks per microsecond), rounded down. The burst read back (what tc
  prints) is that time at the rate, rounded down again: canonical_burst();
- the limit in bytes, exactly; tc derives it from a latency as rate * latency + burst.
"""

from __future__ import annotations

import re

U32 = 2**32 - 1
U64 = 2**64 - 1
ETH_HLEN = 14  # what the kernel adds to the MTU for a frame's size on a veth (psched_mtu())
NSEC_PER_SEC = 10**9
TICK_NS = 64  # one psched tick (PSCHED_SHIFT = 6)
TICKS_PER_SEC = NSEC_PER_SEC // TICK_NS  # 15 625 000: tc's tick_in_usec (15.625) times 10**6
MIN_RATE = 8  # bits/s: one byte per second; less is 0 for the kernel
DEFAULT_LATENCY_MS = 50

_RATE_UNITS = {
    "": 1, "bit": 1,
    "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
    "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
    "bps": 8,
    "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12,
    "kibps": 8 * 2**10, "mibps": 8 * 2**20, "gibps": 8 * 2**30, "tibps": 8 * 2**40,
}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30,
    "kbit": 2**10 // 8, "mbit": 2**20 // 8, "gbit": 2**30 // 8,  # whole bytes, all three
}
# strtod()'s decimal form; the exponent is bounded so that no text can make a huge integer
_NUMBER = re.compile(r"(?P<whole>\d*)(?:\.(?P<fraction>\d*))?(?:[eE](?P<exp>[+-]?\d+))?(?P<unit>[A-Za-z]*)")
_MAX_TEXT = 64
_MAX_EXP = 30


def _scaled(text: object, what: str, units: dict) -> int:
    """The number in `text` times its unit's scale, rounded down: exact, in integers (the
    number is digits times a power of ten; fractions would cost their import at start-up)."""
    example = "10mbit, 1gbit, 500kbit" if what == "rate" else "32kb, 1514b, 1mb"
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"{what} {text!r}: expected text such as {example}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{what} {text}: must not be negative")
        return text  # a bare number: bits per second, or bytes
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{what} {text[:_MAX_TEXT]!r}...: too long")
    match = _NUMBER.fullmatch(text)
    if match is None or not (match.group("whole") or match.group("fraction")):
        hint = ""
        if "%" in text:
            hint = " (a share of the link speed is not supported: give a rate)"
        elif "/" in text and what == "burst":
            hint = " (tc's SIZE/CELL form is not supported: give the size alone)"
        raise ValueError(f"{what} {text!r}: expected a number and a unit, such as {example}{hint}")
    exp = int(match.group("exp") or 0)
    if abs(exp) > _MAX_EXP:
        raise ValueError(f"{what} {text!r}: the number is out of range")
    unit = match.group("unit").lower()
    if unit not in units:
        known = ", ".join(u for u in units if u)
        raise ValueError(f"{what} {text!r}: unknown unit {match.group('unit')!r} (known: {known})")
    fraction = match.group("fraction") or ""
    digits = int((match.group("whole") or "") + fraction or "0") * units[unit]
    exp -= len(fraction)
    return digits * 10**exp if exp >= 0 else digits // 10**-exp  # rounded down, as tc truncates


def parse_rate(text: str | int) -> int:
    """Bits per second from a rate as tc reads it ("10mbit", "1.5gbit", "100kbps" = 800 kbit/s;
    a bare number, or an int from YAML, is bits per second), fractions of a bit dropped.
    ValueError, with the reason, for anything else. 0 parses; expressible() refuses it."""
    return _scaled(text, "rate", _RATE_UNITS)


def parse_size(text: str | int) -> int:
    """Bytes from a size as tc's get_size() reads it ("32kb" = 32768, "1514", "1mbit" = 131072;
    a bare number, or an int from YAML, is bytes), fractions of a byte dropped. ValueError for
    anything else."""
    return _scaled(text, "burst", _SIZE_UNITS)


def format_rate(rate_bps: int) -> str:
    """The shortest exact text parse_rate() reads back as this rate: 10000000 -> "10mbit"."""
    for unit, scale in (("tbit", 10**12), ("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if rate_bps and rate_bps % scale == 0:
            return f"{rate_bps // scale}{unit}"
    return f"{rate_bps}bit"


def format_size(size: int) -> str:
    """The shortest exact text parse_size() reads back as this size: 32768 -> "32kb"."""
    for unit, scale in (("gb", 2**30), ("mb", 2**20), ("kb", 2**10)):
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}b"


# -- what the kernel makes of it -----------------------------------------------------------

def rate_bytes(rate_bps: int) -> int:
    """The kernel's rate: whole bytes per second (tc divides by 8 and truncates)."""
    return rate_bps // 8


def canonical_rate(rate_bps: int) -> int:
    """The rate read back, in bits per second: a multiple of 8."""
    return rate_bytes(rate_bps) * 8


def _mult_shift(rate_Bps: int) -> tuple[int, int]:
    """psched_ratecfg_precompute__() of net/sched/sch_generic.c: the kernel's time of a length
    is (len * mult) >> shift, mult the largest power-of-two multiple of 10**9 / rate below 2**32."""
    factor, shift = NSEC_PER_SEC, 0
    while True:
        mult = (factor // rate_Bps) & U32  # div64_u64() into a u32
        if mult & (1 << 31) or factor & (1 << 63):
            return mult, shift
        factor <<= 1
        shift += 1


def kernel_ticks(rate_bps: int, burst: int) -> int:
    """The bucket the kernel reports for this burst (TCA_TBF_BURST) at this rate, in psched
    ticks: psched_l2t_ns() of the burst, in ticks of 64 ns, rounded down (PSCHED_NS2TICKS)."""
    mult, shift = _mult_shift(rate_bytes(rate_bps))
    return ((burst * mult) >> shift) // TICK_NS


def burst_of_ticks(rate_bps: int, ticks: int) -> int:
    """Bytes a bucket of `ticks` holds at this rate, rounded down (tc's tc_calc_xmitsize(), which
    is what `tc qdisc show` prints as the burst)."""
    return ticks * rate_bytes(rate_bps) // TICKS_PER_SEC


def canonical_burst(rate_bps: int, burst: int) -> int:
    """The burst read back from the kernel after writing this one: at most `burst`, short of it
    by less than a tick's worth of bytes and the kernel's rounding (at 10mbit a tick is 0.08
    byte, and 32kb reads back as 32kb; at 100gbit a tick is 800 bytes, and 32kb reads back as
    32000). The kernel itself still lets a packet of `burst` bytes pass."""
    return burst_of_ticks(rate_bps, kernel_ticks(rate_bps, burst))


def tc_ticks(rate_bps: int, burst: int) -> int:
    """The buffer time tc computes and sends in TCA_TBF_PARMS, exact here: tc_calc_xmittime() in
    ticks per /proc/net/psched, rounded up since iproute2 6.15 (down, and with microseconds
    truncated first, before). With TCA_TBF_BURST the kernel computes its own (kernel_ticks());
    tc caps this at 2**32 - 1 since 6.18 and refuses such a burst since 7.1."""
    return -(-burst * TICKS_PER_SEC // rate_bytes(rate_bps))


def tbf_limit(rate_bps: int, burst: int, latency_ms: int = DEFAULT_LATENCY_MS) -> int:
    """The queue in bytes that holds `latency_ms` at the rate on top of the burst, as tc computes
    the limit from `latency` (rate * latency + burst, rounded down)."""
    return rate_bytes(rate_bps) * latency_ms // 1000 + burst


def default_burst(rate_bps: int, mtu: int = 1500) -> int:
    """A burst for a rate given without one: 10 ms of traffic, and at least two full frames.
    Why: 10 ms of tokens keeps TCP at the rate when the kernel's watchdog wakes late, and two
    frames let one full frame wait while another passes, so the bucket never starves a frame."""
    frame = mtu + ETH_HLEN
    burst = max(-(-rate_bps // 800), 2 * frame)  # rate_bps / 8 bytes/s * 0.010 s, rounded up
    return min(burst, U32)  # TCA_TBF_BURST is a u32: 10 ms pass it only above 3.4 tbit


def expressible(rate_bps: int, burst: int, mtu: int = 1500,
                latency_ms: int = DEFAULT_LATENCY_MS) -> str | None:
    """None if the kernel's tbf keeps this rate and burst as canonical_rate() and
    canonical_burst() say, and passes full frames of this MTU; else why not, in a sentence."""
    R = rate_bytes(rate_bps)
    if R < 1:
        return f"a rate of {rate_bps} bit/s is below {MIN_RATE}bit, one byte per second: 0 for the kernel"
    if R > U64:
        return f"a rate of {format_rate(rate_bps)} does not fit the kernel's 64-bit rate in bytes per second"
    frame = mtu + ETH_HLEN
    if burst > U32:
        return f"a burst of {burst} bytes does not fit the kernel's 32-bit burst (at most {U32} bytes)"
    if burst < frame:
        return (f"a burst of {burst} bytes is less than one full frame (MTU {mtu} + {ETH_HLEN} = {frame} bytes): "
                "the kernel would drop every full-size frame")
    if tc_ticks(rate_bps, burst) >= U32:
        seconds = U32 / TICKS_PER_SEC
        return (f"a burst of {burst} bytes lasts {burst / R:.0f} s at {format_rate(rate_bps)}: the kernel keeps "
                f"the bucket as a 32-bit count of 64 ns ticks, at most {seconds:.1f} s (raise the rate or "
                "lower the burst)")
    limit = tbf_limit(rate_bps, burst, latency_ms)
    if limit > U32:
        return (f"a latency of {latency_ms} ms at {format_rate(rate_bps)} needs a queue of {limit} bytes, "
                f"past the kernel's 32-bit limit ({U32} bytes)")
    return None

"""Whether the wall clock can be trusted: the kernel's NTP synchronisation state.

A gateway without an RTC boots in the past until NTP (or chrony fed by GPS) sets the
clock; ordering and timeouts never use the wall clock, but stamps shown to people and
the time given to the receiver say whether it was trusted when taken.
"""

from __future__ import annotations

import ctypes
import ctypes.util

TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
_TIMEX_SIZE = 512  # larger than struct timex on every Linux ABI; modes = 0 reads only


def clock_synchronised() -> bool:
    """True when the kernel reports a synchronised clock; False when unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # zeroed: modes = 0, change nothing
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return False
    return 0 <= state != TIME_ERROR

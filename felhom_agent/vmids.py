"""The vmid range: which integers PVE accepts as a guest id.

PVE's API schema types ``vmid`` as an integer from 100 to 999999999 (ids below 100 are
reserved). Every place that checks a vmid -- the signed-op payload, desired state, the client,
the fenced root CLI's arguments, the command line and the simulator -- uses these names, so
the range is written once. In text (desired-state keys) a vmid is its canonical decimal
spelling: no sign, no leading zeros.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

__all__ = ["VMID_MAX", "VMID_MIN", "VMID_RANGE", "VMID_TEXT", "is_vmid"]

VMID_MIN: Final = 100
VMID_MAX: Final = 999_999_999
#: The range as messages show it: ``100..999999999``.
VMID_RANGE: Final = f"{VMID_MIN}..{VMID_MAX}"
#: A canonical decimal spelling (range not checked): ``101``, not ``+101`` or ``0101``.
VMID_TEXT: Final = re.compile(r"[1-9][0-9]*")


def is_vmid(value: object) -> TypeGuard[int]:
    """True for an ``int`` (not a ``bool``) within :data:`VMID_MIN`..:data:`VMID_MAX`."""
    return isinstance(value, int) and not isinstance(value, bool) and VMID_MIN <= value <= VMID_MAX

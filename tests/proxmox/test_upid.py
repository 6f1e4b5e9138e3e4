"""UPID parsing: PVE's exact encoding (``docs/pve-facts.md``, "UPID format"), strictly."""

from __future__ import annotations

import pytest

from felhom_agent.proxmox import Upid, UpidError, parse_upid

TOKEN_UPID = "UPID:pve1:0003A1B2:01C9F3E4:6650A1B2:qmstart:100:agent@pve!host-agent:"


def test_parses_every_field_from_hex() -> None:
    """The pid, pstart and starttime fields are uppercase hex; the others are copied verbatim."""
    u = parse_upid(TOKEN_UPID)
    assert u == Upid(
        raw=TOKEN_UPID,
        node="pve1",
        pid=0x3A1B2,
        pstart=0x1C9F3E4,
        starttime=0x6650A1B2,
        type="qmstart",
        id="100",
        user="agent@pve!host-agent",
    )
    assert str(u) == TOKEN_UPID


def test_token_user_is_split_into_user_and_token() -> None:
    """For API tokens the UPID user is user@realm!token; both halves are available."""
    u = parse_upid(TOKEN_UPID)
    assert (u.userid, u.tokenid, u.vmid) == ("agent@pve", "host-agent", 100)
    plain = parse_upid("UPID:pve1:00001234:00005678:6650A1B2:vzdump::root@pam:")
    assert (plain.userid, plain.tokenid, plain.vmid, plain.id) == ("root@pam", None, None, "")


def test_nine_digit_pstart_is_accepted() -> None:
    """pstart may grow to 9 hex digits after 497 days of uptime."""
    u = parse_upid("UPID:node-2:00001234:1ABCDEF01:6650A1B2:vzstart:101:root@pam:")
    assert u.pstart == 0x1ABCDEF01
    assert u.node == "node-2"


def test_lowercase_hex_is_accepted() -> None:
    """PVE's decode regex accepts either case, so we do too."""
    assert parse_upid("UPID:pve:0000abcd:0000ef01:6650a1b2:qmstop:100:root@pam:").pid == 0xABCD


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "UPID:pve1:0003A1B2:01C9F3E4:6650A1B2:qmstart:100:root@pam",  # no trailing colon
        "UPID:pve1:3A1B2:01C9F3E4:6650A1B2:qmstart:100:root@pam:",  # pid not 8 digits
        "UPID:pve1:0003A1B2:01C9F3E4:6650A1B:qmstart:100:root@pam:",  # starttime 7 digits
        "UPID:pve1:0003A1B2:1001C9F3E4:6650A1B2:qmstart:100:root@pam:",  # pstart 10 digits
        "UPID:pve1:0003A1G2:01C9F3E4:6650A1B2:qmstart:100:root@pam:",  # not hex
        "UPID:pve1:0003A1B2:01C9F3E4:6650A1B2:qmstart:100:root@pam:extra:",
        "UPID:-pve:0003A1B2:01C9F3E4:6650A1B2:qmstart:100:root@pam:",  # bad node name
        "UPID:pve1:0003A1B2:01C9F3E4:6650A1B2::100:root@pam:",  # empty type
        "UPID:pve1:0003A1B2:01C9F3E4:6650A1B2:qm/start:100:root@pam:",  # slash
        "UPID:pve1:0003A1B2:01C9F3E4:6650A1B2:qmstart:1 0:root@pam:",  # whitespace
        " UPID:pve1:0003A1B2:01C9F3E4:6650A1B2:qmstart:100:root@pam:",
        "OK",
    ],
)
def test_malformed_upids_are_rejected(bad: str) -> None:
    """Anything that is not exactly UPID-shaped raises UpidError (a ValueError)."""
    with pytest.raises(UpidError) as info:
        parse_upid(bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [None, 42, b"UPID:pve1:", ["UPID"]])
def test_non_strings_are_rejected(bad: object) -> None:
    """A mutation answering a non-string, non-null value is not a UPID."""
    with pytest.raises(UpidError):
        parse_upid(bad)

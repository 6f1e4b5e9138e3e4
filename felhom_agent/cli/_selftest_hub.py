"""``--selftest=hub``: one collect + report round trip to the hub, then parse the answer.

Checks, in order (output as in ``docs/architecture.md`` ("Command line"): one ``OK``/``FAIL`` line
each and a summary):

* ``hub configured`` -- ``hub.url`` is set (without it the mode is a config error, exit 2);
* ``collect`` -- the HostReport was built; any part that could not be read (PVE down, a
  missing privilege) fails the check and names the parts, but the report is still sent;
* ``report`` -- the hub accepted the POST (2xx); a 401/403 says to check ``hub.token``;
* ``envelope`` -- the answer is a valid envelope (``docs/architecture.md``, "Hub protocol"): schema,
  field types;
* ``desired state`` -- the envelope's ``desired`` parses (or is ``null``).

The report is a real heartbeat (the hub records it); it carries no reconcile status or ops,
because no engine runs in this mode. Nothing is mutated on the host.
"""

from __future__ import annotations

from felhom_agent.cli._common import CheckLine, render_checks
from felhom_agent.compose.root import proxmox_client, report_collector
from felhom_agent.config import Config
from felhom_agent.core.desired import DesiredStateError, parse_desired
from felhom_agent.errors import AgentError
from felhom_agent.hub.client import HubClient
from felhom_agent.hub.envelope import parse_envelope

__all__ = ["selftest_hub_command"]

EXIT_CONFIG = 2


def selftest_hub_command(config: Config, *, as_json: bool) -> tuple[int, str]:
    """Run the hub round trip; exit 0 all passed, 1 a check failed, 2 no hub configured."""
    if config.hub.url is None or config.hub.token is None:
        _, text = render_checks("hub", [CheckLine(
            "hub configured", False, "hub.url is not set: there is no hub to talk to")],
            as_json=as_json)
        return EXIT_CONFIG, text
    checks = [CheckLine("hub configured", True, config.hub.url)]
    with proxmox_client(config) as client:
        report = report_collector(config, client, engine=None, audit=None).collect()
    if report.errors:
        failed = "; ".join(f"{e.source}: {e.message}" for e in report.errors)
        checks.append(CheckLine("collect", False,
                                f"{len(report.errors)} part(s) unreadable (sent anyway): "
                                f"{failed}"))
    else:
        checks.append(CheckLine("collect", True,
                                f"{len(report.guests)} guest(s), {len(report.storage)} "
                                f"storage(s), {len(report.to_json())} bytes"))
    try:
        with HubClient(url=config.hub.url, host_id=config.host_id, token=config.hub.token,
                       tls_fingerprint=config.hub.tls_fingerprint,
                       ca_file=config.hub.ca_file) as hub:
            answer = hub.report(report)
    except AgentError as err:
        checks.append(CheckLine("report", False, str(err)))
        return render_checks("hub", checks, as_json=as_json)
    checks.append(CheckLine("report", True, f"accepted by {config.hub.url}"))
    try:
        envelope = parse_envelope(answer, default_interval_s=config.hub.interval_s)
    except AgentError as err:
        checks.append(CheckLine("envelope", False, str(err)))
        return render_checks("hub", checks, as_json=as_json)
    checks.append(CheckLine(
        "envelope", True,
        f"poll interval {envelope.poll_interval_s:g} s, {len(envelope.signed_ops)} signed op(s)"))
    if envelope.desired is None:
        checks.append(CheckLine("desired state", True, "none sent (no change)"))
    else:
        try:
            desired = parse_desired(envelope.desired, path="desired")
        except DesiredStateError as err:
            checks.append(CheckLine("desired state", False, str(err)))
        else:
            checks.append(CheckLine("desired state", True,
                                    f"generation {desired.generation}, "
                                    f"{len(desired.guests)} guest(s)"))
    return render_checks("hub", checks, as_json=as_json)

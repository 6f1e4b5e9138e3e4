"""A client program run *inside* a test container (or wherever an attack comes from).

    python guest_client.py SOCKET COUNT [METHOD PATH [HEADER ...]]

Sends COUNT requests on one persistent connection (reconnecting when the server closes it)
and prints one JSON line: the statuses in order, and the JSON body of the last 2xx answer.
Standard library only: it runs in the container's mount namespace with the test's
interpreter.
"""

from __future__ import annotations

import json
import socket
import sys


def _read(sock: socket.socket) -> tuple[int, bytes] | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return int(lines[0].split()[1]), rest[:length]


def main(argv: list[str]) -> int:
    path, count = argv[0], int(argv[1])
    method, target = (argv[2], argv[3]) if len(argv) > 3 else ("GET", "/1.0/identity")
    headers = "".join(h + "\r\n" for h in (argv[4:] or ["Felhom-Guest-API: 1"]))
    request = f"{method} {target} HTTP/1.1\r\nHost: felhom\r\n{headers}\r\n".encode()
    statuses: list[int | str] = []
    last: object = None
    sock: socket.socket | None = None
    for _ in range(count):
        try:
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(30)
                sock.connect(path)
            sock.sendall(request)
            got = _read(sock)
        except OSError as err:
            got = None
            statuses.append(f"error: {err.strerror or err}")
            sock = None
            continue
        if got is None:
            statuses.append("closed")
            sock.close()
            sock = None
            continue
        statuses.append(got[0])
        if 200 <= got[0] < 300:
            last = json.loads(got[1])
    print(json.dumps({"statuses": statuses, "last": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env bash
# Prints N free TCP ports on 127.0.0.1, one a line (the kernel picks them; all are held until all are chosen).
exec python3 - "${1:-1}" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY

"""
HTTP/2 requests per second over one connection, with the h2 library:

    python bench/h2bench.py h2c|tls PORT SECONDS [INFLIGHT]

h2c upgrades with ``Upgrade: h2c`` first; tls negotiates h2 by ALPN. Keeps
INFLIGHT (default 50) GET streams open and prints one JSON line.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def main(kind: str, port: int, seconds: float, inflight: int = 50) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    if kind == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        sock = context.wrap_socket(sock)
        assert sock.selected_alpn_protocol() == "h2"
        conn.initiate_connection()
        streamId = 1
    else:
        settings = conn.initiate_upgrade_connection()
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        streamId = 3  # stream 1 is the upgrade request
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    openStreams = 0
    done = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        while openStreams < inflight:
            conn.send_headers(streamId, headers, end_stream=True)
            streamId += 2
            openStreams += 1
        sock.sendall(conn.data_to_send())
        data = sock.recv(1 << 20)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id != 1:
                    openStreams -= 1
                    done += 1
    elapsed = time.monotonic() - started
    print(json.dumps({"mode": f"h2-{kind}", "count": done, "seconds": elapsed,
                      "rate": done / elapsed}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), *map(int, sys.argv[4:5]))

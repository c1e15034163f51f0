"""An HTTP/2 client (the `h2` library on a TLS socket) that makes one call
and then stays idle: the gateway must close the connection once
`timeouts.keepalive` has passed, however quiet the client is.
Usage: python3 h2_idle.py HOST PORT CA_FILE KEEPALIVE_SECONDS."""
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events

host, port, ca, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=host)
assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
conn.send_headers(
    1,
    [(":method", "GET"), (":path", "/health"), (":scheme", "https"), (":authority", host)],
    end_stream=True,
)
sock.sendall(conn.data_to_send())
status, done = None, False
while not done:
    data = sock.recv(65535)
    if not data:
        sys.exit("closed before the answer")
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived):
            status = dict(ev.headers)[b":status"]
        elif isinstance(ev, h2.events.StreamEnded):
            done = True
    sock.sendall(conn.data_to_send())
assert status == b"200", status

# now idle: read until the gateway ends the connection (GOAWAY, then close)
idle_from = time.monotonic()
sock.settimeout(keep + 10)
goaway = False
while True:
    try:
        data = sock.recv(65535)
    except socket.timeout:
        sys.exit(f"still open after {keep + 10:.0f}s idle")
    except (ConnectionResetError, ssl.SSLError):
        break
    if not data:
        break
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ConnectionTerminated):
            goaway = True
    pending = conn.data_to_send()
    if pending:
        try:
            sock.sendall(pending)
        except OSError:
            break
elapsed = time.monotonic() - idle_from
assert keep - 0.5 <= elapsed <= keep + 5, f"closed after {elapsed:.1f}s idle"
print(f"closed after {elapsed:.1f}s idle (goaway: {goaway})")

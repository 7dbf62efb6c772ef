"""A trace filter for `twistd msrp --trace-filter` (proto_msrp's trace_filter_route).

    PYTHONPATH=examples twistd -n msrp --trace-destination udp:127.0.0.1:9060 \
        --trace-on 1 --trace-filter trace_filter:msrp_filter

The relay calls the filter once per connection, while tracing is on, with
the other end (si, sp), our end (socket_ip, socket_port), the scheme (proto:
"msrp" or "msrps") and who connected (direction: "in" or "out"). Returning
False is the OpenSIPS route's `drop`: that connection is not traced.
"""


def msrp_filter(si, sp, socket_ip, socket_port, proto, direction):
    """Trace only connections from/to 192.0.2.30:8000 on our 192.0.2.10:2855."""
    return si == "192.0.2.30" and sp == 8000 and socket_ip == "192.0.2.10" and socket_port == 2855


def skip_loopback(si, sp, socket_ip, socket_port, proto, direction):
    """Trace everything except connections from this host (health checks, tests)."""
    return not (si.startswith("127.") or si == "::1")

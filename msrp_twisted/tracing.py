"""HEPv3 tracing of MSRP connections, as OpenSIPS' proto_msrp does it.

proto_msrp's parameters map onto this module as follows:

* ``trace_destination``: :func:`parse_trace_destination` (the proto_hep
  ``hep_id`` text) and :func:`open_sender`;
* ``trace_on`` and the ``msrp_trace`` MI command: :attr:`Tracer.enabled`;
* ``trace_filter_route``: ``Tracer(connection_filter=...)``, see
  :func:`load_filter`. It runs once per connection, only while tracing is on;
  returning ``False`` is the route's ``drop``.

Every connection event becomes one HEP packet of protocol type 0x59
(OpenSIPS' "net"), IP protocol 6, correlation id = the connection id in
decimal, source = the remote peer and destination = our socket whatever the
direction (OpenSIPS' tcpconn2su()). The payload is OpenSIPS' JSON, printed
the way cJSON_Print() does, with keys in OpenSIPS' order::

    {"Protocol": "MSRP"|"MSRPS", "Event": ..., "Status": "SUCCESS"|"FAILURE",
     "Message": ...}

Events the transport reports, and the ``Event`` value sent:

================  ==============  =============================================
transport event   Event on wire   meaning / default Message
================  ==============  =============================================
ACCEPTED          ACCEPTED        OpenSIPS' name. "Connection accepted..." /
                                  "Failed to accept connection..."
CONNECT           CONNECT_START   OpenSIPS' name for an outgoing connect that
                                  has started. "Async connect in progress..." /
                                  "Failed to connect..." (could not start)
CONNECTED         CONNECTED       OpenSIPS' name; the outcome of a connect.
                                  "Successfully connected..." /
                                  "Failed to connect..."
CLOSED            CLOSED          OpenSIPS' name; Message = the close reason.
TLS_HANDSHAKE     TLS_HANDSHAKE   ours (OpenSIPS never traces msrps handshakes)
MAX_MSG_CHUNKS    MAX_MSG_CHUNKS  ours: a message arrived in too many reads
SEND_TIMEOUT      SEND_TIMEOUT    ours: the socket was not writable in time
READ_TIMEOUT      READ_TIMEOUT    ours: "Timeout waiting for a complete message"
IDLE              IDLE            ours: "Timeout on no traffic"
FRAMING           FRAMING         ours: the byte stream could not be framed
================  ==============  =============================================

(The ours-only events carry what OpenSIPS would only give as a CLOSED reason.)
Other event names are logged once and not traced. An end the transport does
not know (``None``, e.g. the local side of a connect that failed) is sent as
the unspecified address of the other end's family, port 0.

Deliberate differences from OpenSIPS (see hep3-format-notes.md section 2.2):
OpenSIPS only ever delivers CONNECTED, labelled "TCP", because its
trans_trace.c has no case for PROTO_MSRP/MSRPS; we send every event with the
"MSRP"/"MSRPS" label it evidently intended. We keep IP protocol 6 for msrps
too (OpenSIPS marks TLS with IPPROTO_IDP, 22) and always send the real
addresses (OpenSIPS writes 127.0.0.2 for CLOSED, an aliasing bug).
"""

from __future__ import annotations  # X | None annotations on Python < 3.10 (PyPy 3.9)

import importlib
import ipaddress
import random
import re
from collections import deque
from dataclasses import dataclass

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from .core import hep

DEFAULT_HEP_PORT = 9060  # proto_hep's HEP_PORT, used when hep_id has no port

# -- trace_destination ---------------------------------------------------------


@dataclass(frozen=True)
class TraceDestination:
    host: str
    port: int
    transport: str  # "udp" or "tcp"
    version: int = 3
    name: str | None = None


_SHORT_FORM = re.compile(r"(?i)(udp|tcp|tls):")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_NAME = re.compile(r"[^\s\[\];]+\Z")


def parse_trace_destination(text):
    """Parse a HEP destination.

    Accepts proto_hep's ``hep_id`` syntax,
    ``[name] host[:port][; transport=udp|tcp][; version=3]`` (port 9060 and
    transport tcp by default, as proto_hep; IPv6 hosts in brackets), and the
    short form ``udp:127.0.0.1:9060`` / ``tcp:[::1]:9060``. Only HEP version 3
    is supported, over UDP or TCP.
    """
    if not isinstance(text, str):
        raise ValueError(f"trace destination must be a string, got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise ValueError("trace destination is empty")
    short = _SHORT_FORM.match(s)
    if short:
        transport = _check_transport(short.group(1), text)
        rest = s[short.end() :]
        if ";" in rest:
            raise ValueError(
                f"trace destination {text!r}: parameters are not allowed in the short"
                " form proto:host:port; use '[name] host:port; transport=...'"
            )
        host, port = _split_host_port(rest, text, default_port=None)
        return TraceDestination(host, port, transport)

    name = None
    if s.startswith("["):
        close = s.find("]")
        if close < 0:
            raise ValueError(f"trace destination {text!r}: '[' without a closing ']'")
        inside = s[1:close].strip()
        if not _is_ipv6(inside):
            if not _NAME.match(inside):
                raise ValueError(f"trace destination {text!r}: bad hep_id name {inside!r}")
            name = inside
            s = s[close + 1 :].strip()
    uri, *params = s.split(";")
    transport, version = "tcp", 3
    seen = set()
    for param in params:
        param = param.strip()
        if not param:
            continue
        key, eq, value = (part.strip() for part in param.partition("="))
        key = key.lower()
        if not eq or not value:
            raise ValueError(f"trace destination {text!r}: parameter {param!r} needs a value")
        if key in seen:
            raise ValueError(f"trace destination {text!r}: parameter {key!r} given twice")
        seen.add(key)
        if key == "transport":
            transport = _check_transport(value, text)
        elif key == "version":
            version = _check_version(value, text)
        else:
            raise ValueError(
                f"trace destination {text!r}: unknown parameter {key!r}"
                " (expected transport or version)"
            )
    host, port = _split_host_port(uri.strip(), text, default_port=DEFAULT_HEP_PORT)
    return TraceDestination(host, port, transport, version, name)


def _check_transport(value, text):
    transport = value.lower()
    if transport in ("udp", "tcp"):
        return transport
    if transport == "tls":
        raise ValueError(
            f"trace destination {text!r}: transport 'tls' is not supported (udp or tcp)"
        )
    raise ValueError(f"trace destination {text!r}: unknown transport {value!r} (udp or tcp)")


def _check_version(value, text):
    if not value.isdigit():
        raise ValueError(f"trace destination {text!r}: version {value!r} is not a number")
    version = int(value)
    if version in (1, 2):
        raise ValueError(
            f"trace destination {text!r}: HEP version {version} is not supported, only 3"
        )
    if version != 3:
        raise ValueError(f"trace destination {text!r}: there is no HEP version {version}")
    return version


def _split_host_port(hostport, text, default_port):
    if not hostport:
        raise ValueError(f"trace destination {text!r}: missing host")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError(f"trace destination {text!r}: '[' without a closing ']' in host")
        host, after = hostport[1:close], hostport[close + 1 :]
        if not _is_ipv6(host):
            raise ValueError(
                f"trace destination {text!r}: {host!r} in brackets is not an IPv6 address"
            )
        host = str(ipaddress.IPv6Address(host))
        if after and not after.startswith(":"):
            raise ValueError(f"trace destination {text!r}: unexpected {after!r} after the host")
        port_text = after[1:] if after else None
    else:
        if hostport.count(":") > 1:
            raise ValueError(
                f"trace destination {text!r}: write IPv6 addresses in brackets, e.g. [::1]:9060"
            )
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        host = _check_host(host, text)
    if port_text is None:
        if default_port is None:
            raise ValueError(f"trace destination {text!r}: missing port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"trace destination {text!r}: bad port {port_text!r} (1-65535)")
    return host, int(port_text)


def _check_host(host, text):
    if not host:
        raise ValueError(f"trace destination {text!r}: missing host")
    labels = host.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"trace destination {text!r}: bad IPv4 address {host!r}") from None
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"trace destination {text!r}: bad host name {host!r}")
    return host


def _is_ipv6(text):
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _ip_literal(host):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# -- senders -------------------------------------------------------------------


class HEPUDPSender(DatagramProtocol):
    """Send HEP packets as datagrams from an ephemeral port.

    ``send()`` never blocks: a datagram the kernel will not take right now
    (full buffer, too big, unreachable) is dropped and counted.
    """

    log = Logger()

    def __init__(self, host, port, reactor=None, interface=None):
        address = _ip_literal(host)
        if address is None:
            raise ValueError(f"HEP over UDP needs an IP address, not {host!r}")
        if not 0 < port < 65536:
            raise ValueError(f"bad HEP collector port {port!r}")
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.destination = (str(address), port)
        if interface is None:
            interface = "::" if address.version == 6 else "0.0.0.0"
        self._interface = interface
        self._listening = None
        self._sent = 0
        self._dropped = 0
        self._failing = False

    @property
    def stats(self):
        return {"sent": self._sent, "dropped": self._dropped}

    def start(self):
        if self._listening is None:
            self._listening = self._reactor.listenUDP(0, self, interface=self._interface)
        return self

    def send(self, packet):
        if self._listening is None or self.transport is None:
            self._dropped += 1
            return False
        try:
            self.transport.write(packet, self.destination)
        except (OSError, MessageLengthError) as e:
            self._dropped += 1
            if not self._failing:
                self._failing = True
                self.log.warn(
                    "HEP datagram to {host}:{port} dropped ({error}); counting further drops"
                    " silently until one gets through",
                    host=self.destination[0],
                    port=self.destination[1],
                    error=e,
                )
            return False
        self._failing = False
        self._sent += 1
        return True

    def close(self):
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        return maybeDeferred(listening.stopListening)


class _HEPClientProtocol(Protocol):
    """One TCP connection to the collector, also its own push producer."""

    paused = False

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            keepalive(True)
        self.factory._attach(self)

    def dataReceived(self, data):
        pass  # collectors do not talk back; ignore whatever they send

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self.factory._flush()

    def stopProducing(self):
        self.paused = True

    def connectionLost(self, reason):
        self.paused = True
        self.factory._detach(self, reason)


class HEPTCPSender(Factory):
    """Keep one TCP connection to a HEP collector and stream packets on it.

    While disconnected, or while the connection's write buffer is full (the
    transport paused us), packets wait in a queue of at most ``max_queue``;
    beyond that new packets are dropped and counted, so a dead or slow
    collector costs bounded memory and never slows the caller. Reconnects
    back off exponentially: ``initial_delay * factor**(n-1)`` capped at
    ``max_delay``, stretched by up to ``jitter`` (a fraction) at random.
    ``clock`` schedules the retries, ``reactor`` makes the connections.
    """

    protocol = _HEPClientProtocol
    noisy = False
    log = Logger()

    def __init__(
        self,
        host,
        port,
        reactor=None,
        clock=None,
        max_queue=1000,
        initial_delay=0.5,
        max_delay=30.0,
        factor=2.0,
        jitter=0.1,
        connect_timeout=5.0,
    ):
        if not 0 < port < 65536:
            raise ValueError(f"bad HEP collector port {port!r}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue!r}")
        if not (initial_delay > 0 and max_delay >= initial_delay and factor >= 1 and jitter >= 0):
            raise ValueError(
                "backoff needs initial_delay > 0, max_delay >= initial_delay,"
                " factor >= 1 and jitter >= 0"
            )
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.destination = (host, port)
        self.max_queue = max_queue
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.factor = factor
        self.jitter = jitter
        address = _ip_literal(host)
        if address is None:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
        elif address.version == 4:
            endpoint = TCP4ClientEndpoint(reactor, str(address), port, timeout=connect_timeout)
        else:
            endpoint = TCP6ClientEndpoint(reactor, str(address), port, timeout=connect_timeout)
        if clock is None:
            clock = reactor
        self._service = ClientService(endpoint, self, retryPolicy=self.retry_delay, clock=clock)
        self._queue = deque()
        self._connection = None
        self._closed = False
        self._overflowing = False
        self._sent = 0
        self._dropped = 0
        self._disconnect_waiters = []

    @property
    def stats(self):
        return {"sent": self._sent, "dropped": self._dropped, "queued": len(self._queue)}

    @property
    def connected(self):
        return self._connection is not None

    def retry_delay(self, attempt):
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        try:
            delay = min(self.initial_delay * self.factor ** (attempt - 1), self.max_delay)
        except OverflowError:
            delay = self.max_delay
        return delay * (1 + self.jitter * random.random())

    def start(self):
        if not self._closed:
            self._service.startService()
        return self

    def whenConnected(self, failAfterFailures=None):
        """The current connection's protocol, or the next one's.

        Like ClientService.whenConnected, but the result is delivered on a
        later reactor turn: ClientService fires it from inside its state
        machine, where calling close() would raise.
        """
        return self._later(self._service.whenConnected(failAfterFailures))

    def whenDisconnected(self):
        """Fires once the current connection is lost and a retry is scheduled."""
        if self._connection is None:
            return succeed(None)
        d = Deferred()
        self._disconnect_waiters.append(d)
        return self._later(d)

    def _later(self, d):
        relayed = Deferred(lambda _: d.cancel())
        d.addBoth(lambda outcome: self._reactor.callLater(0, relayed.callback, outcome))
        return relayed

    def send(self, packet):
        """Write or queue ``packet``; False if it had to be dropped."""
        if self._closed:
            self._dropped += 1
            return False
        connection = self._connection
        if connection is not None and not connection.paused and not self._queue:
            connection.transport.write(packet)
            self._sent += 1
            return True
        if len(self._queue) >= self.max_queue:
            self._dropped += 1
            if not self._overflowing:
                self._overflowing = True
                self.log.warn(
                    "HEP queue for {host}:{port} is full ({max_queue} packets); dropping traces",
                    host=self.destination[0],
                    port=self.destination[1],
                    max_queue=self.max_queue,
                )
            return False
        self._queue.append(bytes(packet))
        return True

    def close(self):
        """Stop reconnecting, drop what is still queued, close the connection."""
        if self._closed:
            return succeed(None)
        self._closed = True
        self._dropped += len(self._queue)
        self._queue.clear()
        if self._connection is not None:
            # Let already written bytes drain, then close.
            self._connection.transport.unregisterProducer()
        return self._service.stopService()

    def _attach(self, connection):
        self._connection = connection
        host, port = self.destination
        self.log.info("HEP collector {host}:{port} connected", host=host, port=port)
        self._flush()

    def _detach(self, connection, reason):
        if self._connection is not connection:
            return
        self._connection = None
        waiters, self._disconnect_waiters = self._disconnect_waiters, []
        for d in waiters:
            d.callback(None)

    def _flush(self):
        connection = self._connection
        queue = self._queue
        while queue and connection is self._connection and not connection.paused:
            connection.transport.write(queue.popleft())
            self._sent += 1
        if not queue:
            self._overflowing = False


def open_sender(destination, reactor=None, clock=None, **options):
    """A started sender for a destination (a TraceDestination or its text).

    ``options`` go to the sender: ``interface`` for UDP; ``max_queue``,
    backoff settings and ``connect_timeout`` for TCP.
    """
    if isinstance(destination, str):
        destination = parse_trace_destination(destination)
    if destination.transport == "udp":
        if "interface" not in options:
            # A loopback collector is reached from a loopback socket; there
            # is no reason to bind the wildcard address for it.
            import ipaddress

            try:
                if ipaddress.ip_address(destination.host).is_loopback:
                    options["interface"] = destination.host
            except ValueError:
                pass
        sender = HEPUDPSender(destination.host, destination.port, reactor=reactor, **options)
    else:
        sender = HEPTCPSender(
            destination.host, destination.port, reactor=reactor, clock=clock, **options
        )
    return sender.start()


# Digest credentials in a trace would allow an offline dictionary attack on
# the password: their values are blanked in message traces.
_SECRET_HEADERS = re.compile(rb"(?im)^((?:Authorization|Authentication-Info):)[^\r\n]*")


def _redact(head):
    return _SECRET_HEADERS.sub(rb"\1 <redacted>", head)


# -- the tracer ----------------------------------------------------------------

# transport event -> (Event on the wire, default Message on success, on failure)
EVENTS = {
    "ACCEPTED": ("ACCEPTED", "Connection accepted...", "Failed to accept connection..."),
    "CONNECT": ("CONNECT_START", "Async connect in progress...", "Failed to connect..."),
    "CONNECTED": ("CONNECTED", "Successfully connected...", "Failed to connect..."),
    "CLOSED": ("CLOSED", None, None),
    "TLS_HANDSHAKE": ("TLS_HANDSHAKE", "TLS handshake completed", "TLS handshake failed"),
    "MAX_MSG_CHUNKS": ("MAX_MSG_CHUNKS", None, "Message arrived in too many chunks"),
    "SEND_TIMEOUT": ("SEND_TIMEOUT", None, "Timeout waiting for the socket to become writable"),
    "READ_TIMEOUT": ("READ_TIMEOUT", None, "Timeout waiting for a complete message"),
    "IDLE": ("IDLE", None, "Timeout on no traffic"),
    "FRAMING": ("FRAMING", None, "Bad MSRP framing"),
    "CONNECTION_LIMIT": ("CONNECTION_LIMIT", None, "Too many connections from this address"),
}

# After these nothing more will be reported for the connection.
_FINAL_EVENTS = {("CLOSED", True), ("CLOSED", False), ("CONNECT", False), ("CONNECTED", False)}

# Protocol type of MSRP message traces. The spec has no MSRP value. 0x59 would
# put raw MSRP text where consumers of OpenSIPS' "net" type expect JSON, and
# 0x01 would feed it to SIP parsers. 0x64 is the de facto LOG type (OpenSIPS
# "xlog", hep.lua "LOG"): Homer stores it as free text and shows it next to the
# connection events sharing its correlation id, which is what we want. An
# unassigned private number would risk a future collision instead.
MESSAGE_PROTO_TYPE = hep.PROTO_LOG

# Keeps a message trace within one datagram (65507 bytes over IPv4) with room
# for the other chunks.
_MAX_MESSAGE_PAYLOAD = 64 * 1024 - 1024


class Tracer:
    """Turns connection events (and optionally MSRP messages) into HEP traces.

    ``connection_filter(si=, sp=, socket_ip=, socket_port=, proto=,
    direction=)`` decides once per connection whether to trace it: ``False``
    means no (the filter route's ``drop``); anything else, or an exception,
    means yes. The decision is remembered by ``conn_id`` until the connection
    is CLOSED, a CONNECT/CONNECTED fails, or :meth:`forget` is called; at
    most ``max_decisions`` are kept (oldest evicted, its filter would run
    again), so a transport that forgets to report the end costs bounded
    memory.
    """

    log = Logger()

    def __init__(
        self,
        sender,
        reactor=None,
        enabled=False,
        capture_id=1,
        auth_key=None,
        connection_filter=None,
        trace_messages=False,
        max_body=256,
        homer5_delim=None,
        message_proto_type=MESSAGE_PROTO_TYPE,
        max_decisions=100_000,
    ):
        if not isinstance(capture_id, int) or isinstance(capture_id, bool) or capture_id >> 32:
            raise ValueError(f"capture_id must be an unsigned 32-bit int, got {capture_id!r}")
        if isinstance(auth_key, str):
            auth_key = auth_key.encode("utf-8")
        if auth_key is not None and not isinstance(auth_key, bytes):
            raise ValueError(f"auth_key must be str or bytes, got {type(auth_key).__name__}")
        if connection_filter is not None and not callable(connection_filter):
            raise ValueError(f"connection_filter must be callable, got {connection_filter!r}")
        if max_body < 0:
            raise ValueError(f"max_body must be >= 0, got {max_body!r}")
        if max_decisions < 1:
            raise ValueError(f"max_decisions must be >= 1, got {max_decisions!r}")
        if reactor is None:
            from twisted.internet import reactor
        self.sender = sender
        self._reactor = reactor
        self._enabled = bool(enabled)
        self.capture_id = capture_id
        self.auth_key = auth_key
        self.connection_filter = connection_filter
        self.trace_messages = trace_messages
        self.max_body = max_body
        self.homer5_delim = homer5_delim
        self.message_proto_type = message_proto_type
        self.max_decisions = max_decisions
        self._decisions = {}
        self._unknown_events = set()
        self._sent = 0
        self._dropped = 0
        self._filtered = 0

    @property
    def enabled(self):
        """The trace_on switch; flip it at runtime."""
        return self._enabled

    @enabled.setter
    def enabled(self, value):
        self._enabled = bool(value)

    @property
    def stats(self):
        """sent: handed to the sender; dropped: could not be built or the
        sender refused them; filtered: suppressed by the connection filter.
        Packets the sender loses later are in ``sender.stats``."""
        return {"sent": self._sent, "dropped": self._dropped, "filtered": self._filtered}

    def connection_event(self, conn, event, success=True, message=None):
        """Trace a connection event; True if a packet was handed over."""
        try:
            wire_event, ok_text, fail_text = EVENTS[event]
        except (KeyError, TypeError):
            if repr(event) not in self._unknown_events:
                self._unknown_events.add(repr(event))
                self.log.warn(
                    "Not tracing unknown connection event {event!r}; known: {known}",
                    event=event,
                    known=", ".join(sorted(EVENTS)),
                )
            return False
        try:
            if not self._traced(conn):
                return False
            if message is None:
                message = ok_text if success else fail_text
            payload = hep.net_event_payload(
                _protocol_label(conn),
                wire_event,
                "SUCCESS" if success else "FAILURE",
                message,
                self.homer5_delim,
            )
            ends = (conn.remote_host, conn.remote_port, conn.local_host, conn.local_port)
            return self._emit(conn, hep.PROTO_NET, *ends, payload)
        finally:
            if (event, bool(success)) in _FINAL_EVENTS:
                self.forget(conn)

    def message(self, conn, direction, head_bytes, body_prefix=b""):
        """Trace an MSRP message: start line + headers + up to max_body body bytes.

        ``direction`` is the message's: "in" (received) or "out" (sent).
        """
        if direction not in ("in", "out"):
            raise ValueError(f"message direction must be 'in' or 'out', got {direction!r}")
        if not self.trace_messages or not self._traced(conn):
            return False
        payload = _redact(bytes(head_bytes)) + bytes(body_prefix or b"")[: self.max_body]
        payload = payload[:_MAX_MESSAGE_PAYLOAD]
        if direction == "in":
            ends = (conn.remote_host, conn.remote_port, conn.local_host, conn.local_port)
        else:
            ends = (conn.local_host, conn.local_port, conn.remote_host, conn.remote_port)
        return self._emit(conn, self.message_proto_type, *ends, payload)

    def forget(self, conn):
        """Drop the cached filter decision for ``conn``."""
        self._decisions.pop(conn.conn_id, None)

    def _traced(self, conn):
        if not self._enabled:
            return False
        if self.connection_filter is None:
            return True
        decision = self._decisions.get(conn.conn_id)
        if decision is None:
            decision = self._run_filter(conn)
            if len(self._decisions) >= self.max_decisions:
                del self._decisions[next(iter(self._decisions))]
            self._decisions[conn.conn_id] = decision
        if not decision:
            self._filtered += 1
        return decision

    def _run_filter(self, conn):
        try:
            verdict = self.connection_filter(
                si=conn.remote_host,
                sp=conn.remote_port,
                socket_ip=conn.local_host,
                socket_port=conn.local_port,
                proto=conn.scheme,
                direction=conn.direction,
            )
        except Exception:
            self.log.failure(
                "Trace filter {filter} raised for connection {conn_id}"
                " ({si}:{sp} -> {socket_ip}:{socket_port}); tracing it",
                filter=_callable_name(self.connection_filter),
                conn_id=conn.conn_id,
                si=conn.remote_host,
                sp=conn.remote_port,
                socket_ip=conn.local_host,
                socket_port=conn.local_port,
            )
            return True
        return verdict is not False

    def _emit(self, conn, proto_type, src_host, src_port, dst_host, dst_port, payload):
        try:
            src, dst = _address_pair(src_host, dst_host)
            sec, usec = divmod(round(self._reactor.seconds() * 1_000_000), 1_000_000)
            packet = hep.HEPPacket(
                ip_family=hep.FAMILY_IPV4 if src.version == 4 else hep.FAMILY_IPV6,
                ip_protocol=hep.IPPROTO_TCP,
                src_ip=str(src),
                dst_ip=str(dst),
                src_port=src_port or 0,
                dst_port=dst_port or 0,
                timestamp=sec,
                timestamp_usec=usec,
                proto_type=proto_type,
                capture_id=self.capture_id,
                auth_key=self.auth_key,
                payload=payload,
                correlation_id=str(conn.conn_id).encode("ascii"),
            )
            data = packet.encode()
        except (ValueError, TypeError) as e:
            self._dropped += 1
            self.log.warn(
                "Cannot build a HEP trace for connection {conn_id}: {error}",
                conn_id=conn.conn_id,
                error=e,
            )
            return False
        try:
            accepted = self.sender.send(data)
        except Exception:
            self._dropped += 1
            self.log.failure("HEP sender {sender!r} failed", sender=self.sender)
            return False
        if accepted is False:
            self._dropped += 1
            return False
        self._sent += 1
        return True


def _protocol_label(conn):
    return {"msrp": "MSRP", "msrps": "MSRPS"}.get(conn.scheme, str(conn.scheme).upper())


def _address_pair(a, b):
    """Both ends as addresses of one IP version (a HEP packet has one family)."""
    x = None if a is None else _parse_address(a)
    y = None if b is None else _parse_address(b)
    if x is None and y is None:
        x = y = ipaddress.IPv4Address(0)
    elif x is None:
        x = ipaddress.IPv4Address(0) if y.version == 4 else ipaddress.IPv6Address(0)
    elif y is None:
        y = ipaddress.IPv4Address(0) if x.version == 4 else ipaddress.IPv6Address(0)
    if x.version != y.version:
        x, y = _unmapped(x), _unmapped(y)
    if x.version != y.version:
        x, y = _mapped(x), _mapped(y)
    return x, y


def _parse_address(host):
    if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None


def _unmapped(address):
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _mapped(address):
    if address.version == 4:
        return ipaddress.IPv6Address("::ffff:" + str(address))
    return address


def _callable_name(func):
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}:{name}" if module else name


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def load_filter(dotted_name):
    """Resolve ``package.module:function`` (or ``package.module.function``)."""
    if not isinstance(dotted_name, str) or not dotted_name.strip():
        raise ValueError(f"trace filter name must be a non-empty string, got {dotted_name!r}")
    name = dotted_name.strip()
    if ":" in name:
        module_name, _, attr_path = name.partition(":")
        attrs = attr_path.split(".")
        _check_identifiers(name, module_name.split(".") + attrs)
        obj = _resolve(_import(module_name, name), attrs, module_name, name)
    else:
        parts = name.split(".")
        _check_identifiers(name, parts)
        if len(parts) < 2:
            raise ValueError(f"trace filter {name!r} must be 'package.module:function'")
        for split in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:split])
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                    continue  # no such module: maybe the last part is an attribute
                raise _import_failed(name, module_name, e) from e
            except Exception as e:
                raise _import_failed(name, module_name, e) from e
            obj = _resolve(module, parts[split:], module_name, name)
            break
        else:
            raise ValueError(f"trace filter {name!r}: no module {parts[0]!r}")
    if not callable(obj):
        raise ValueError(f"trace filter {name!r} is not callable ({type(obj).__name__})")
    return obj


def _check_identifiers(name, parts):
    for part in parts:
        if not _IDENTIFIER.match(part):
            raise ValueError(f"trace filter {name!r}: {part!r} is not a Python identifier")


def _import(module_name, name):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ValueError(f"trace filter {name!r}: no module {module_name!r}") from e
        raise _import_failed(name, module_name, e) from e
    except Exception as e:
        raise _import_failed(name, module_name, e) from e


def _import_failed(name, module_name, error):
    return ValueError(f"trace filter {name!r}: importing {module_name!r} failed: {error!r}")


def _resolve(obj, attrs, module_name, name):
    where = module_name
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ValueError(
                f"trace filter {name!r}: {where!r} has no attribute {attr!r}"
            ) from None
        where = f"{where}.{attr}"
    return obj

"""Worker processes of one relay reaching each other's sessions.

When the relay runs as several processes behind one address
(msrp_twisted.workers, docs/scaling.md), every session-id starts with the
index of the worker that owns it (core.ids.new_owned_session_id). Each
worker keeps one msrp connection (a "link") to each sibling. A frame whose
session belongs to a sibling goes over the link as an ordinary relay hop,
and the owner applies the usual session rules to it: a link is never a
session's own connection, so a sibling can only deliver toward a session's
client, exactly as any other relay could.
"""

import collections

from twisted.internet import defer
from twisted.logger import Logger

from ..core.ids import session_id_owner

log = Logger()

__all__ = ["Siblings"]

# A link or an inbound sibling connection is never closed for idleness:
# it carries traffic whenever a session needs it.
_FOREVER = 10 * 365 * 86400.0
# Message-IDs remembered per passed-on frame, so that a failure REPORT the
# owner sends back can be returned on the connection the frame came from.
_PASSED_MAX = 4096


# -- inside a worker -------------------------------------------------------------


class Siblings:
    """What one worker knows of the others: their private ports and one
    ready msrp connection (a link) to each.

    Also a connection observer (for the links' lifetimes) and a request
    handler for the REPORTs a sibling returns for frames passed on to it.
    """

    def __init__(self, index, count, reactor, link_retry=0.2, link_retry_max=5.0):
        self.index = index
        self.count = count
        self.reactor = reactor
        self.link_retry = link_retry
        self.link_retry_max = link_retry_max
        self.connections = None
        self.transactions = None
        self.relay = None
        self.port = None  # our private listener
        self.private_port = None
        self.stopping = False
        self._ports = {}      # sibling index -> its private port
        self._links = {}      # sibling index -> our outbound connection to it
        self._link_ids = {}   # conn_id -> sibling index, for our links
        self._inbound = set()  # conn_ids of connections accepted on our private port
        self._connecting = set()
        self._retry = {}      # sibling index -> (DelayedCall, delay)
        self._passed = collections.OrderedDict()  # Message-ID -> conn_id
        self._link_waiters = []
        self.stats = dict.fromkeys(
            ("sibling_frames_out", "sibling_unreachable", "sibling_marks_removed",
             "sibling_reports_returned"), 0)

    # -- routing questions from the relay ------------------------------
    def owner_of(self, session_id):
        """The worker index a session-id names, or None."""
        owner = session_id_owner(session_id)
        return owner if owner is not None and owner < self.count else None

    def link(self, index):
        """A ready connection to worker index, or None."""
        conn = self._links.get(index)
        if conn is None or conn.closed or not conn.ready:
            return None
        return conn

    def arrived(self, conn, request):
        """Take off the mark of a frame a sibling passed on unchanged.

        The sibling forwards such a frame with hops=0, which puts the top
        To-Path URI in front of From-Path as well; the frame goes on from
        here as if it had arrived here in the first place. Marks are only
        looked for on connections to our private port.
        """
        if conn.conn_id not in self._inbound:
            return
        headers = request.headers
        from_parts = headers["From-Path"].split(None, 1)
        if len(from_parts) < 2 or from_parts[0] != headers["To-Path"].split(None, 1)[0]:
            return
        request.replace_header("From-Path", from_parts[1], well_formed=True)
        self.stats["sibling_marks_removed"] += 1

    def passed(self, conn, request):
        """Remember where a frame passed on to its owner came from."""
        if request.method == "REPORT":
            return
        mid = request.headers.get("Message-ID")
        if not mid:
            return
        passed = self._passed
        passed[mid] = conn.conn_id
        passed.move_to_end(mid)
        while len(passed) > _PASSED_MAX:
            passed.popitem(last=False)

    def counters(self):
        out = dict(self.stats)
        out["sibling_links_up"] = sum(1 for i in self._links if self.link(i) is not None)
        return out

    # -- lifecycle ---------------------------------------------------------
    @defer.inlineCallbacks
    def start(self, connections, transactions, relay):
        """Listen on 127.0.0.1:0 for siblings; fires with the port number."""
        self.connections = connections
        self.transactions = transactions
        self.relay = relay
        # After the relay: only what it does not claim (another's URI).
        transactions.add_handler(self, match=lambda uri: not relay.is_own(uri))
        self.port = yield connections.listen("msrp:127.0.0.1:0")
        self.private_port = self.port.getHost().port
        return self.private_port

    def stop(self):
        self.stopping = True
        for call, _ in self._retry.values():
            if call.active():
                call.cancel()
        self._retry.clear()

    def set_ports(self, ports):
        """The siblings' private ports ({index: port}) as the parent knows them."""
        ports = {int(i): int(p) for i, p in ports.items() if int(i) != self.index}
        for index in list(self._ports):
            if index not in ports:
                self._forget(index)
        for index, port in ports.items():
            if self._ports.get(index) != port:
                self._forget(index)
                self._ports[index] = port
                self._connect(index)

    def _forget(self, index):
        self._ports.pop(index, None)
        retry = self._retry.pop(index, None)
        if retry is not None and retry[0].active():
            retry[0].cancel()
        conn = self._links.pop(index, None)
        if conn is not None:
            self._link_ids.pop(conn.conn_id, None)
            conn.close("sibling worker %d went away" % index, abort=False)

    def _connect(self, index):
        port = self._ports.get(index)
        if port is None or index in self._connecting or self.stopping:
            return
        from ..core.uri import MSRPURI

        self._connecting.add(index)
        d = self.connections.connection_for(MSRPURI("127.0.0.1", port, None, "tcp", "msrp"))
        d.addCallbacks(self._linked, self._link_failed, (index, port), None, (index, port))

    def _linked(self, conn, index, port):
        self._connecting.discard(index)
        if self._ports.get(index) != port or self.stopping:
            conn.close("sibling link no longer needed", abort=False)
            return
        old = self._links.get(index)
        if old is conn:
            return
        self._retry.pop(index, None)
        _as_link(conn, self.reactor)
        self._links[index] = conn
        self._link_ids[conn.conn_id] = index
        log.info("link to worker {index} up (127.0.0.1:{port})", index=index, port=port)
        self._check_waiters()

    def wait_linked(self):
        """A Deferred that fires once there is a ready link to every known sibling."""
        d = defer.Deferred()
        self._link_waiters.append(d)
        self._check_waiters()
        return d

    def _check_waiters(self):
        if all(self.link(i) is not None for i in self._ports):
            waiters, self._link_waiters = self._link_waiters, []
            for d in waiters:
                d.callback(None)

    def _link_failed(self, f, index, port):
        self._connecting.discard(index)
        if self._ports.get(index) != port or self.stopping:
            return
        log.warn("link to worker {index} (127.0.0.1:{port}) failed: {err}",
                 index=index, port=port, err=f.getErrorMessage())
        self._schedule(index)

    def _schedule(self, index):
        _, last = self._retry.get(index, (None, 0.0))
        delay = min(self.link_retry_max, last * 2) if last else self.link_retry
        self._retry[index] = (self.reactor.callLater(delay, self._retry_now, index), delay)

    def _retry_now(self, index):
        if index in self._ports and self.link(index) is None:
            self._connect(index)

    # -- connection observer ---------------------------------------------
    def connection_event(self, conn, event, success, message):
        if event == "ACCEPTED":
            if self.private_port is not None and conn.local_port == self.private_port:
                self._inbound.add(conn.conn_id)
                _as_link(conn, self.reactor)
        elif event == "CLOSED":
            self._inbound.discard(conn.conn_id)
            index = self._link_ids.pop(conn.conn_id, None)
            if index is not None and self._links.get(index) is conn:
                del self._links[index]
                if index in self._ports and not self.stopping:
                    log.info("link to worker {index} closed: {why}", index=index, why=message)
                    self._schedule(index)

    # -- IRequestHandler: REPORTs coming back over a link ------------------
    def head_received(self, conn, request):
        from ..transactions import DISCARD

        self._not_ours(conn, request)
        return DISCARD

    def request_received(self, conn, request):
        if (request.method == "REPORT" and conn.conn_id in self._link_ids
                and self._return_report(request)):
            return
        self._not_ours(conn, request)

    def connection_lost(self, conn, reason):
        pass

    def _not_ours(self, conn, request):
        # What the transaction layer answers when no handler claims a URI.
        self.transactions.refuse(conn, request, 481, "no session for %s" % request.to_path[0])

    def _return_report(self, report):
        """A sibling's failure REPORT for a frame we passed on: send it on
        the connection that frame came from (where its sender is)."""
        conn_id = self._passed.get(report.headers.get("Message-ID"))
        source = self.connections.connections.get(conn_id) if conn_id is not None else None
        if source is None or source.closed:
            return False
        headers = list(report.headers)[2:]
        self.stats["sibling_reports_returned"] += 1
        self.transactions.send_request(list(report.to_path), list(report.from_path), "REPORT",
                                       headers, conn=source).addErrback(
            lambda f: log.info("returned REPORT not sent: {err}", err=f.getErrorMessage()))
        return True


def _as_link(conn, reactor):
    """Settings for a connection between two workers of this relay.

    It carries many sessions at once, so the guards against slow or
    dripping clients do not apply: a worker that stalls for send_timeout
    (100 ms by default) on a busy machine must not cost every frame in
    flight on the link, and its end closes with the process if it dies.
    Many small frames and their 200s go both ways: no Nagle delay.
    """
    from dataclasses import replace

    conn.settings = replace(conn.settings, send_timeout=0, max_msg_chunks=0)
    conn.keep_alive_until(reactor.seconds() + _FOREVER)
    transport = conn.transport
    if transport is not None and hasattr(transport, "setTcpNoDelay"):
        transport.setTcpNoDelay(True)

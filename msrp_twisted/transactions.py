"""Transactions and the signalling operations (RFC 4975 sections 7 and 8,
RFC 4976 section 6 for forwarding).

A transaction is keyed by the transaction id *and* the connection it was
sent on: a response with the right id arriving on another connection does
not complete it (OpenSIPS matches on the id alone). Every pending
transaction on a connection fails at once when that connection is lost.

Incoming requests are routed to handlers registered by upper layers (relay
sessions, endpoint sessions), first match on the top To-Path URI wins. What
no handler claims is answered here: 400 for invalid frames, 501 for unknown
methods, 481 for unknown sessions; never a response to a REPORT.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from .connections import SendError
from .core.errors import HeaderError, MSRPError, SerializationError, URIError
from .core.headers import Headers
from .core.ids import new_transaction_id
from .core.message import REASONS, Request, Response
from .core.serializer import head as serialize_head
from .core.serializer import path_response
from .core.serializer import serialize
from .core.uri import format_path
from .protocol import ConnectionClosed, IBodySink, IMessageHandler, IWritabilityObserver

log = Logger()

KNOWN_METHODS = frozenset(("SEND", "REPORT", "AUTH"))
DEFAULT_TIMEOUT = 30.0


class TransactionError(Exception):
    """A request got no response; ``code`` is the status upper layers use."""

    code = 408

    def __init__(self, reason, tid=None):
        super().__init__(reason)
        self.reason = reason
        self.tid = tid


class TransactionTimeout(TransactionError):
    """No response within the transaction timeout (a local 408)."""


class TransactionConnectionLost(TransactionError):
    """The connection died with the transaction pending."""


class IRequestHandler(Interface):
    """An upper layer that takes requests for some To-Path URIs."""

    def head_received(conn, request):
        """A request with a body is starting: return an IBodySink to stream
        the body, or None to get the whole request in request_received."""

    def request_received(conn, request):
        """A complete request."""

    def connection_lost(conn, reason):
        """Optional: a connection this handler saw went away."""


class _Transaction:
    """One pending request. Its outcome goes to a Deferred, or (on the
    relay's hot path, where a Deferred per frame is measurable) to a pair
    of plain callables. With the manager's default timeout it waits in the
    manager's deadline queue; any other timeout gets its own timer."""

    __slots__ = ("request", "conn", "deferred", "callbacks", "timer", "deadline", "key", "timeout")

    def __init__(self, request, conn, deferred, callbacks, key):
        self.request = request
        self.conn = conn
        self.deferred = deferred
        self.callbacks = callbacks
        self.timer = None
        self.deadline = None
        self.key = key
        self.timeout = None

    def succeed(self, response):
        if self.deferred is not None:
            self.deferred.callback(response)
        else:
            self.callbacks[0](response)

    def fail(self, error):
        if self.deferred is not None:
            self.deferred.errback(error)
        else:
            self.callbacks[1](Failure(error))


@implementer(IBodySink)
class _DiscardSink:
    """Swallows the body of a request that was already refused."""

    def body_data(self, data):
        pass

    def body_end(self, flag):
        pass

    def body_aborted(self, reason):
        pass


DISCARD = _DiscardSink()


def _first_uri(raw_path):
    return raw_path.split(None, 1)[0]


def _rest(raw_path):
    parts = raw_path.split(None, 1)
    return parts[1] if len(parts) > 1 else ""


@implementer(IMessageHandler)
class TransactionManager:
    """The transaction layer of one MSRP service."""

    def __init__(self, connections, reactor=None, timeout=DEFAULT_TIMEOUT):
        if reactor is None:
            reactor = connections.reactor
        self.reactor = reactor
        self.connections = connections
        connections.handler = self
        self.timeout = timeout
        self._pending = {}
        self._by_conn = {}
        # Transactions with the default timeout, oldest first: their
        # deadlines are in insertion order, so one timer (for the oldest)
        # serves them all instead of a callLater and a cancel per request.
        self._deadlines = {}
        self._sweep_timer = None
        self._handlers = []
        self._methods = set(KNOWN_METHODS)
        self.stats = dict.fromkeys(
            ("requests_sent", "responses_received", "responses_unmatched",
             "transactions_timed_out", "transactions_failed", "requests_received",
             "responses_sent", "reports_sent", "refused_400", "refused_481",
             "refused_501", "partial_completed"), 0)

    # -- handlers --------------------------------------------------------
    def add_handler(self, handler, match=None, methods=(), reuse_inbound=False):
        """Route requests whose top To-Path URI satisfies match(uri) (None:
        all) to handler. methods adds extension methods it understands.

        reuse_inbound: requests this handler accepts make their connection
        the route back to their From-Path authority (RFC 4975 section 6),
        as an endpoint answering a peer that cannot be dialled needs. Only
        claimed requests register, never refused ones: an unauthenticated
        stranger must not be able to divert traffic by naming someone
        else's address in its From-Path. A relay routes by session instead
        and leaves this off.
        """
        self._handlers.append((match, handler, reuse_inbound))
        self._methods.update(methods)

    def remove_handler(self, handler):
        self._handlers = [entry for entry in self._handlers if entry[1] is not handler]

    @property
    def pending_count(self):
        return len(self._pending)

    # -- IMessageHandler -------------------------------------------------
    def connection_made(self, conn):
        pass

    def head_received(self, conn, message):
        self.stats["requests_received"] += 1
        handler = self._route(conn, message)
        if handler is None:
            return DISCARD
        return handler.head_received(conn, message)

    def message_received(self, conn, message):
        if message.is_request:
            if not message.has_body:
                # A request with a body was counted (and refused, if it
                # was) when its head arrived.
                self.stats["requests_received"] += 1
            handler = self._route(conn, message)
            if handler is not None:
                handler.request_received(conn, message)
        else:
            self._response_received(conn, message)

    def invalid_message(self, conn, error):
        if not error.is_request or error.method == "REPORT":
            return
        headers = Headers(error.headers or ())
        to_raw, from_raw = headers.get("To-Path"), headers.get("From-Path")
        if not to_raw or not from_raw:
            log.info("cannot answer invalid request from {peer} (tid {tid}): no paths to reply on",
                     peer=conn.peer, tid=error.tid)
            return
        if (headers.get("Failure-Report") or "").strip().lower() == "no":
            return
        self.stats["refused_400"] += 1
        to = from_raw if error.method not in (None, "SEND") else _first_uri(from_raw)
        self._write_response(conn, error.tid, serialize, Response(
            error.tid, error.code, reason_phrase(error.reason),
            [("To-Path", to), ("From-Path", _first_uri(to_raw))]))

    def connection_lost(self, conn, reason):
        tids = self._by_conn.pop(conn.conn_id, None)
        if tids:
            for tid in list(tids):
                tx = self._pending.pop((conn.conn_id, tid), None)
                if tx is None:
                    continue
                self._untime(tx)
                self.stats["transactions_failed"] += 1
                tx.fail(TransactionConnectionLost(
                    "connection to %s lost: %s" % (conn.peer, reason), tid))
        for _, handler, _ in self._handlers:
            lost = getattr(handler, "connection_lost", None)
            if lost is not None:
                lost(conn, reason)

    # -- routing ---------------------------------------------------------
    def _route(self, conn, request):
        try:
            to_path = request.to_path
            from_path = request.from_path
        except URIError as e:
            self.refuse(conn, request, 400, "bad path: %s" % e)
            return None
        method = request.method
        if method not in self._methods:
            self.refuse(conn, request, 501, "unknown method %s" % method)
            return None
        top = to_path[0]
        for match, handler, reuse_inbound in self._handlers:
            if match is None or match(top):
                if reuse_inbound:
                    self.connections.register_peer(conn, from_path[0])
                return handler
        self.refuse(conn, request, 481, "no session for %s" % top)
        return None

    def refuse(self, conn, request, code, reason):
        """Answer request with an error status (counted in stats, logged
        with the peer and the reason); the comment carries reason for 400."""
        log.info("refused {method} {tid} from {peer}: {code} {reason}",
                 method=request.method, tid=request.tid, peer=conn.peer, code=code, reason=reason)
        key = "refused_%d" % code
        if key in self.stats:
            self.stats[key] += 1
        self.send_reply(conn, request, code, reason_phrase(reason) if code == 400 else None)

    # -- responses -------------------------------------------------------
    def send_reply(self, conn, request, code, comment=None, headers=()):
        """Answer request on the connection it came on, hop by hop.

        Returns False when the rules say no response is sent: never for a
        REPORT, none at all for Failure-Report: no, only negative ones for
        Failure-Report: partial.
        """
        if request.method == "REPORT":
            return False
        try:
            failure_report = request.failure_report
        except HeaderError:
            failure_report = "yes"
        if failure_report == "no" or (failure_report == "partial" and code // 100 == 2):
            return False
        rh = request.headers
        from_raw = rh["From-Path"]
        to = _first_uri(from_raw) if request.method == "SEND" else from_raw
        frm = _first_uri(rh["To-Path"])
        if comment is None:
            comment = REASONS.get(code)
        if not headers and rh.validated:
            # URIs cut out of parsed paths: as well formed as those, so the
            # bytes are written without building a Response (hot path).
            return self._write_response(conn, request.tid, path_response,
                                        request.tid, code, comment, to, frm)
        items = [("To-Path", to), ("From-Path", frm)]
        items.extend(headers)
        return self._write_response(conn, request.tid, serialize,
                                    Response(request.tid, code, comment, items))

    def _write_response(self, conn, tid, build, *args):
        """Write build(*args) (the response's bytes) on conn."""
        try:
            conn.send_bytes(build(*args))
        except ConnectionClosed:
            return False
        except SerializationError as e:
            log.warn("cannot build response {tid} for {peer}: {error}", tid=tid, peer=conn.peer, error=e)
            return False
        self.stats["responses_sent"] += 1
        return True

    def _response_received(self, conn, response):
        tx = self._pending.pop((conn.conn_id, response.tid), None)
        if tx is None:
            self.stats["responses_unmatched"] += 1
            log.info("dropped response {tid} {code} from {peer}: matches no transaction on this connection",
                     tid=response.tid, code=response.code, peer=conn.peer)
            return
        self.stats["responses_received"] += 1
        tids = self._by_conn.get(conn.conn_id)
        if tids is not None:
            tids.discard(response.tid)
        self._untime(tx)
        tx.succeed(response)

    # -- requests --------------------------------------------------------
    def _track(self, conn, request, timeout, callbacks=None):
        """Register a transaction; returns its Deferred, or None when the
        outcome goes to callbacks (on_response, on_failure(Failure))."""
        key = (conn.conn_id, request.tid)
        if key in self._pending:
            raise SerializationError("transaction id %s already pending on %s" % (request.tid, conn.peer))
        if callbacks is None:
            def cancel(d):
                tx = self._pending.pop(key, None)
                if tx is not None:
                    self._untime(tx)
                    self._by_conn.get(key[0], set()).discard(key[1])

            d = defer.Deferred(cancel)
        else:
            d = None
        tx = self._pending[key] = _Transaction(request, conn, d, callbacks, key)
        if timeout is None or timeout == self.timeout:
            tx.deadline = self.reactor.seconds() + self.timeout
            self._deadlines[key] = tx
            if self._sweep_timer is None:
                self._sweep_timer = self.reactor.callLater(self.timeout, self._sweep)
        else:
            tx.timeout = timeout
            tx.timer = self.reactor.callLater(timeout, self._timed_out, key)
        tids = self._by_conn.get(conn.conn_id)
        if tids is None:
            tids = self._by_conn[conn.conn_id] = set()
        tids.add(request.tid)
        return d

    def _end_frame(self, conn, writer, flag):
        """Write a streamed request's end-line; its timeout counts from here,
        so the time a large body takes to go out (behind a slow next hop) is
        not taken from the wait for its response."""
        writer.end(flag)
        tx = self._pending.get((conn.conn_id, writer.tid))
        if tx is None:
            return
        if tx.timer is not None:
            if tx.timer.active():
                tx.timer.reset(tx.timeout)
            return
        deadline = self.reactor.seconds() + self.timeout
        if deadline - tx.deadline < 1.0:
            return  # the usual case: the body went out with its head
        # To the back of the queue, which stays in deadline order.
        deadlines = self._deadlines
        deadlines.pop(tx.key, None)
        tx.deadline = deadline
        deadlines[tx.key] = tx

    def _untime(self, tx):
        if tx.timer is not None:
            if tx.timer.active():
                tx.timer.cancel()
        else:
            deadlines = self._deadlines
            deadlines.pop(tx.key, None)
            if not deadlines and self._sweep_timer is not None:
                # Nothing left to time out: leave no timer behind.
                self._sweep_timer.cancel()
                self._sweep_timer = None

    def _sweep(self):
        """Time out what is due in the deadline queue, then sleep until the
        oldest remaining deadline."""
        self._sweep_timer = None
        deadlines = self._deadlines
        now = self.reactor.seconds()
        while deadlines:
            key = next(iter(deadlines))
            due = deadlines[key].deadline
            if due > now:
                self._sweep_timer = self.reactor.callLater(due - now, self._sweep)
                return
            del deadlines[key]
            self._timed_out(key)

    def _timed_out(self, key):
        tx = self._pending.pop(key, None)
        if tx is None:
            return
        self._by_conn.get(key[0], set()).discard(key[1])
        if _expects_no_200(tx.request):
            # Failure-Report: partial: the receiver never sends a 200, so
            # silence until the timeout means the request was accepted.
            self.stats["partial_completed"] += 1
            tx.succeed(None)
            return
        self.stats["transactions_timed_out"] += 1
        log.info("transaction {tid} ({method}) to {peer} timed out",
                 tid=key[1], method=tx.request.method, peer=tx.conn.peer)
        tx.fail(TransactionTimeout(
            "no response to %s %s from %s" % (tx.request.method, key[1], tx.conn.peer), key[1]))

    def new_tid(self, conn=None, body=None):
        while True:
            tid = new_transaction_id()
            if conn is not None and (conn.conn_id, tid) in self._pending:
                continue
            if body is not None and (b"-------" + tid.encode("ascii")) in body:
                continue
            return tid

    @staticmethod
    def needs_transaction(request):
        if request.method == "REPORT":
            return False
        if request.method == "SEND":
            try:
                return request.failure_report != "no"
            except HeaderError:
                return True
        return True

    def send_request(self, to_path, from_path, method="SEND", headers=(), body=None,
                     flag="$", conn=None, tls=None, timeout=None, tid=None):
        """Send a request toward to_path[0] (reusing or opening a connection).

        body may be bytes or an IBodyProducer-like object (startProducing,
        pauseProducing, resumeProducing, stopProducing) that is streamed.
        Fires with the Response, or None when no transaction is created
        (REPORT, SEND with Failure-Report: no); fails with SendError,
        TransactionTimeout or TransactionConnectionLost.
        """
        items = [("To-Path", format_path(to_path)), ("From-Path", format_path(from_path))]
        items.extend(headers)
        streamed = body is not None and hasattr(body, "startProducing")
        request = Request(tid or self.new_tid(conn, None if streamed else body), method,
                          Headers(items), None if streamed else body, flag)
        try:
            if streamed:
                # Checked now: once the transaction exists a bad head would
                # leave it waiting for a response to a frame never sent.
                serialize_head(request, True)
                data = None
            else:
                data = serialize(request)
        except SerializationError as e:
            return defer.fail(e)
        return self._send(request, data, body if streamed else None, to_path[0], conn, tls, timeout)

    def _send(self, request, data, producer, next_hop, conn, tls, timeout):
        if conn is not None:
            d = defer.succeed(conn)
        else:
            d = self.connections.connection_for(next_hop, tls)

        def send(conn):
            track = self.needs_transaction(request)
            result = self._track(conn, request, timeout) if track else None
            self.stats["requests_sent"] += 1
            if request.method == "REPORT":
                self.stats["reports_sent"] += 1
            if producer is None:
                try:
                    conn.send_bytes(data)
                except ConnectionClosed as e:
                    if result is not None:
                        result.cancel()
                        result.addErrback(lambda f: None)  # its CancelledError is ours, not the caller's
                    raise SendError("connection to %s closed: %s" % (conn.peer, e)) from None
            else:
                self._stream_body(conn, request, producer, result)
            return result

        return d.addCallback(send)

    def _stream_body(self, conn, request, producer, result):
        flag = request.flag

        def got_writer(writer):
            observer = _ProducerThrottle(producer, conn, request.tid)
            conn.add_writability_observer(observer)
            pd = defer.maybeDeferred(producer.startProducing, writer)
            # Only a started producer can be paused (FileBodyProducer has
            # nothing to pause before startProducing).
            if not pd.called and not conn.writable:
                observer.pause_producing()

            def done(r):
                conn.remove_writability_observer(observer)
                self._end_frame(conn, writer, flag)
                return r

            def failed(f):
                conn.remove_writability_observer(observer)
                log.info("aborting streamed {tid} to {peer}: {err}", tid=request.tid, peer=conn.peer,
                         err=f.getErrorMessage())
                writer.abort()
                return None

            pd.addCallbacks(done, failed)

        conn.open_stream(request).addCallbacks(got_writer, lambda f: None)

    # -- reports ---------------------------------------------------------
    def send_report(self, request, code, comment=None, byte_range=None, conn=None, tls=None, to_path=None):
        """A REPORT about request toward its originator (RFC 4975 section 7.1.2).

        conn sends it on a known connection (the one the request came on);
        otherwise the From-Path's first hop is looked up or connected to.
        """
        try:
            origin = to_path if to_path is not None else request.from_path
            me = request.to_path[:1]
        except URIError as e:
            return defer.fail(SendError("cannot address a REPORT: %s" % e))
        if byte_range is None:
            byte_range = request.headers.get("Byte-Range")
            if byte_range is None and request.body is not None:
                n = len(request.body)
                byte_range = "1-%d/%d" % (n, n)
        headers = [("Message-ID", request.message_id or self.new_tid())]
        if byte_range is not None:
            headers.append(("Byte-Range", str(byte_range)))
        headers.append(("Status", "000 %03d %s" % (code, comment or REASONS.get(code, ""))))
        return self.send_request(origin, me, "REPORT", headers, conn=conn, tls=tls)

    # -- forwarding (relays) ----------------------------------------------
    def forward_headers(self, request, hops=1):
        """Headers for the next hop: move the top To-Path URI (or the top
        ``hops`` URIs, when a relay hands a frame to itself) onto From-Path."""
        h = request.headers
        to_parts = h["To-Path"].split()
        if len(to_parts) <= hops:
            raise SerializationError("no next hop in To-Path")
        moved = to_parts[hops - 1::-1] if hops > 1 else to_parts[:1]
        items = [("To-Path", " ".join(to_parts[hops:])),
                 ("From-Path", " ".join(moved) + " " + h["From-Path"])]
        if not getattr(h, "validated", False):
            items.extend(list(h)[2:])
            return Headers(items)
        # Rearranged parsed text only (paths split on white space), so the
        # result is as well formed as the headers it came from, and every
        # header keeps its position.
        items.extend(h._items[2:])
        return Headers._trusted(items, dict(h._index))

    def forward_request(self, request, conn=None, tls=None, timeout=None, hops=1):
        """Forward a complete request to the next hop with a new transaction id."""
        try:
            headers = self.forward_headers(request, hops)
            next_hop = request.to_path[hops]
        except (SerializationError, IndexError):
            return defer.fail(SendError("no next hop in To-Path"))
        body = request.body
        fwd = Request(self.new_tid(conn, body), request.method, headers, body, request.flag)
        try:
            data = serialize(fwd)
        except SerializationError as e:
            return defer.fail(e)
        return self._send(fwd, data, None, next_hop, conn, tls, timeout)

    def forward_stream(self, source, request, conn=None, tls=None, timeout=None, hops=1, callbacks=None):
        """Forward a request whose body is still arriving on source.

        Returns (sink, response_deferred). The sink goes back to the
        connection as head_received's result; it passes body data through as
        it arrives and pauses the source while the destination is not
        writable (or not connected yet).

        callbacks=(on_response, on_failure) takes the outcome instead of a
        Deferred (then None is returned in its place): on_response(Response
        or None), on_failure(Failure). With a destination connection that
        can start a frame now, this is the relay's hot path and runs
        without any Deferred.
        """
        try:
            headers = self.forward_headers(request, hops)
            next_hop = request.to_path[hops]
        except (SerializationError, IndexError):
            # As forward_request: a failed result, not an exception out of
            # the caller's head_received (which would close the source).
            error = SendError("no next hop in To-Path")
            if callbacks is not None:
                callbacks[1](Failure(error))
                return DISCARD, None
            return DISCARD, defer.fail(error)
        fwd = Request(self.new_tid(conn), request.method, headers, None, request.flag)
        if callbacks is not None and conn is not None and conn.can_start_frame():
            try:
                # fwd has the same method and headers; request has them parsed.
                tracked = self.needs_transaction(request)
                writer = conn.start_frame(fwd)
            except SerializationError as e:
                callbacks[1](Failure(e))
                return DISCARD, None
            if tracked:
                self._track(conn, fwd, timeout, callbacks)
            self.stats["requests_sent"] += 1
            sink = _ForwardingSink(source, self)
            sink.attach(conn, writer)
            if not tracked:
                callbacks[0](None)
            return sink, None
        sink = _ForwardingSink(source, self)
        result = defer.Deferred()
        if conn is not None:
            d = defer.succeed(conn)
        else:
            d = self.connections.connection_for(next_hop, tls)

        def connected(dest):
            tracked = self._track(dest, fwd, timeout) if self.needs_transaction(request) else None
            self.stats["requests_sent"] += 1
            wd = dest.open_stream(fwd)
            wd.addCallbacks(lambda w: sink.attach(dest, w), sink.fail)
            return tracked

        def chain(r):
            result.callback(r)

        def failed(f):
            sink.fail(f)
            result.errback(f)

        d.addCallback(connected).addCallbacks(chain, failed)
        if sink.writer is None and not sink.failed:
            sink.pause_producing()  # still connecting: hold the source
        if callbacks is not None:
            result.addCallbacks(callbacks[0], callbacks[1])
            return sink, None
        return sink, result

    def forward_reply(self, conn, request, response):
        """Relay a response back to the previous hop as an answer to request."""
        h = response.headers
        items = [("To-Path", _rest(h["To-Path"]) or request.headers["From-Path"]),
                 ("From-Path", _first_uri(request.headers["To-Path"]) + " " + h["From-Path"])]
        items.extend(list(h)[2:])
        return self._write_response(conn, request.tid, serialize,
                                    Response(request.tid, response.code, response.comment, items))


@implementer(IWritabilityObserver)
class _ProducerThrottle:
    """Maps a destination's writability onto a body producer, and stops
    the producer when the destination is gone: a file would otherwise be
    read to its end into a closed connection."""

    writable = True

    def __init__(self, producer, conn, tid):
        self.producer = producer
        self.conn = conn
        self.tid = tid
        self.paused = False

    def pause_producing(self):
        if not self.paused:
            self.paused = True
            self.producer.pauseProducing()

    def resume_producing(self):
        # A closing connection resumes its observers so that they find out.
        if self.conn.closed:
            log.info("stopping the body of {tid} to {peer}: {reason}", tid=self.tid,
                     peer=self.conn.peer, reason=self.conn.close_reason)
            try:
                self.producer.stopProducing()
            except Exception:
                log.failure("body producer of {tid} failed to stop", tid=self.tid)
            return
        if self.paused:
            self.paused = False
            self.producer.resumeProducing()


@implementer(IBodySink, IWritabilityObserver)
class _ForwardingSink:
    """Passes a streamed body from a source connection to a writer.

    Until the writer exists the source is paused and what already arrived
    (at most a read or two) is held; afterwards data flows straight through
    and the source is paused whenever the destination's buffer is full.
    When the destination is ready at once (the common case: a reused
    connection) the source is never paused at all, which saves two
    event-loop registrations per relayed chunk.
    """

    writable = True

    def __init__(self, source, tm):
        self.source = source
        self.tm = tm
        self.dest = None
        self.writer = None
        self.held = []
        self.ended = None
        self.aborted = False
        self.failed = False
        self.paused = False

    def attach(self, dest, writer):
        self.dest = dest
        self.writer = writer
        for data in self.held:
            writer.write(data)
        self.held = []
        if self.aborted:
            writer.abort()
            self._resume_source()
        elif self.ended is not None:
            self.tm._end_frame(dest, writer, self.ended)
            self._resume_source()
        else:
            dest.add_writability_observer(self)
            if dest.writable:
                self._resume_source()
            else:
                self.pause_producing()

    def fail(self, f):
        self.failed = True
        self.held = []
        self._resume_source()
        return None

    def _resume_source(self):
        if self.paused:
            self.paused = False
            self.source.resume_reading()

    def _finish(self):
        if self.dest is not None:
            self.dest.remove_writability_observer(self)
        self._resume_source()

    # IBodySink
    def body_data(self, data):
        if self.writer is not None:
            self.writer.write(data)
        elif not self.failed:
            self.held.append(data)

    def body_end(self, flag):
        if self.writer is not None:
            self.tm._end_frame(self.dest, self.writer, flag)
            self._finish()
        else:
            self.ended = flag

    def body_aborted(self, reason):
        if self.writer is not None:
            self.writer.abort()
            self._finish()
        else:
            self.aborted = True

    # IWritabilityObserver (of the destination)
    def pause_producing(self):
        if not self.paused:
            self.paused = True
            self.source.pause_reading()

    def resume_producing(self):
        self._resume_source()


def _expects_no_200(request):
    try:
        return request.failure_report == "partial"
    except HeaderError:
        return False


def reason_phrase(text):
    """A reason safe for a start line (no CR/LF, bounded)."""
    return " ".join(str(text).split())[:200]


__all__ = [
    "TransactionManager", "IRequestHandler", "TransactionError", "TransactionTimeout",
    "TransactionConnectionLost", "KNOWN_METHODS", "DEFAULT_TIMEOUT", "MSRPError",
]

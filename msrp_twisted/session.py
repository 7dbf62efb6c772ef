"""One MSRP session of an endpoint (RFC 4975 sections 5 and 7).

Sending goes through chunking.MessageSender; delivery is confirmed by the
200s (hop by hop) or, when a success report was asked, by the success
REPORT from the far end. Receiving goes through chunking.ChunkReceiver:
complete messages are handed to ``on_message`` and queued for ``messages()``.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from .chunking import DEFAULT_CHUNK_SIZE, ChunkReceiver, MessageSender
from .connections import SendError
from .core.errors import HeaderError, URIError
from .core.ids import new_message_id
from .endpoint import EndpointError, as_path
from .transactions import TransactionError

log = Logger()

# A session through relays AUTHs again after this share of the shortest
# Expires granted, so the relays' sessions never lapse under it.
AUTH_REFRESH_SHARE = 2 / 3


class DeliveryFailed(EndpointError):
    """The far end (or a relay) reported that a message did not arrive."""


class SessionClosed(EndpointError):
    """The session was closed before the operation could finish."""


class OutgoingMessage:
    """A message being sent: ``result`` fires on confirmed delivery.

    With a success report asked for, that is once every chunk got its 200
    *and* the REPORT arrived (through relays the REPORT may overtake the
    last 200); ``result`` then fires with the SendResult and ``report`` is
    the REPORT. A failure REPORT fails it with DeliveryFailed (and stops the
    send); cancel() fails it with chunking.SendCancelled.
    """

    def __init__(self, session, sender, success_report):
        self.session = session
        self.sender = sender
        self.message_id = sender.message_id
        self.success_report = success_report
        self.result = defer.Deferred(lambda d: self.cancel())
        self.report = None  # the REPORT request that confirmed or failed it
        self.summary = None  # the SendResult once every chunk was confirmed
        self._confirmed = False
        sender.result.addCallbacks(self._sent_ok, self._send_failed)

    def cancel(self):
        """Abort the message ('#' chunk) if it is still being sent."""
        self.sender.cancel()

    def _sent_ok(self, summary):
        self.summary = summary
        if not self.success_report or self._confirmed:
            self._finish(summary)
        return None

    def _send_failed(self, f):
        self._fail(f)
        return None

    def _finish(self, value):
        self.session._outgoing.pop(self.message_id, None)
        if not self.result.called:
            self.result.callback(value)

    def _fail(self, reason):
        self.session._outgoing.pop(self.message_id, None)
        if not self.result.called:
            self.result.errback(reason)

    def report_received(self, request):
        try:
            status = request.status
        except HeaderError:
            status = None
        if status is None:
            log.info("REPORT for {mid} without a usable Status ignored", mid=self.message_id)
            return
        self.report = request
        if status.code == 200:
            if self.success_report:
                self._confirmed = True
                if self.summary is not None:
                    self._finish(self.summary)
            return
        # Fail first: stopping the sender must not turn this into a cancel.
        self._fail(DeliveryFailed(
            "message %s not delivered: %03d %s" % (self.message_id, status.code, status.comment or ""),
            status.code))
        self.sender.cancel("the far end reported %03d" % status.code)


class ReconnectPolicy:
    """How a session gets its connection back after losing it.

    ``attempts`` tries, the first at once, then after initial_delay seconds
    multiplied by factor each time, at most max_delay.
    """

    def __init__(self, attempts=5, initial_delay=1.0, max_delay=30.0, factor=2.0):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.factor = factor

    def delay(self, attempt):
        if attempt == 0:
            return 0.0
        return min(self.max_delay, self.initial_delay * self.factor ** (attempt - 1))


class Session:
    """An MSRP session: our path, the peer's path, messages both ways.

    With a ``reconnect`` policy, losing the connection to the first hop
    (the peer, or our first relay) starts reconnecting: through relays that
    means authenticating again, which yields new Use-Paths, so our path
    changes and ``on_path_changed(session)`` is called: the application
    must tell the peer (in SIP, a re-INVITE). The active side then sends the
    connection-opening empty SEND again. ``on_disconnected(session, error)``
    is called when every attempt failed.

    Through relays, the session AUTHs again at 2/3 of the shortest Expires
    granted (``refresh_auth``), so that a long chat outlives its relay
    sessions; ``clock`` (default: the endpoint's reactor) runs that timer.
    """

    def __init__(self, endpoint, local_uri, use_paths=(), on_message=None, chunk_size=DEFAULT_CHUNK_SIZE,
                 spool_dir=None, max_size=None, keepalive=None, on_message_failed=None,
                 reconnect=None, on_path_changed=None, on_disconnected=None, clock=None):
        # The session's own timers (AUTH refresh, reconnect, keep-alive).
        self.clock = clock if clock is not None else endpoint.reactor
        self.reconnect_policy = reconnect
        self.on_path_changed = on_path_changed
        self.on_disconnected = on_disconnected
        self.relays = []
        self.expires = None
        self.peer_path = None
        self.active = False
        self._first_hop = None
        self._reconnect_call = None
        self._reconnecting = False
        self._auth_refresh_call = None
        self.auth_expires = None
        self.endpoint = endpoint
        self.tm = endpoint.transactions
        self.local_uri = local_uri
        self.session_id = local_uri.session_id
        # Nearest relay first: the order we send through them.
        self.use_paths = list(use_paths)
        self.to_path = None
        self.on_message = on_message
        self.on_message_failed = on_message_failed
        self.chunk_size = chunk_size
        self.closed = False
        self._outgoing = {}
        self._queue = defer.DeferredQueue()
        options = {}
        if max_size is not None:
            options["max_size"] = max_size
        self.receiver = ChunkReceiver(
            self.tm, self._deliver, report_received=self._report_received,
            message_failed=self._message_failed, spool_dir=spool_dir, **options)
        self.tm.add_handler(self.receiver, match=self._is_ours, reuse_inbound=True)
        self._keepalive = None
        if keepalive:
            self.start_keepalive(keepalive)

    def _is_ours(self, uri):
        return uri.session_id == self.session_id and not self.closed

    @property
    def path(self):
        """Our path as peers address it: the relay authenticated last (the
        one nearest the peer) first, back down to our URI (RFC 4976
        section 6)."""
        return self.use_paths[::-1] + [self.local_uri]

    @property
    def path_text(self):
        """Our path as a peer needs it (what SDP's a=path carries)."""
        return " ".join(str(u) for u in self.path)

    # -- setup -----------------------------------------------------------------
    def connect(self, peer_path, active=True):
        """Set the peer's path; the active side opens the connection with an
        empty SEND (RFC 4975 section 5.4), which some clients require.

        Fires with the session, or fails with EndpointError saying why the
        peer could not be reached or refused the session.
        """
        if self.closed:
            return defer.fail(SessionClosed("session %s is closed" % self.session_id))
        try:
            peer = as_path(peer_path)
        except (URIError, ValueError) as e:
            return defer.fail(EndpointError("bad peer path: %s" % e))
        if not peer:
            return defer.fail(EndpointError("bad peer path: it is empty"))
        if not self.use_paths and not self.endpoint.listening and peer[0].scheme != self.local_uri.scheme:
            # Reachable only on the connection we open: name its scheme, so
            # that the peer answers over it instead of looking for another.
            self.local_uri = self.endpoint.local_uri(self.session_id, peer[0].scheme)
        self.to_path = self.use_paths + peer
        self.peer_path = peer
        self.active = active
        if not active:
            self._watch_first_hop()
            return defer.succeed(self)
        d = self.tm.send_request(self.to_path, [self.local_uri], "SEND",
                                 [("Message-ID", new_message_id())], tls=self.endpoint.tls)

        def opened(response):
            if response is not None and response.code != 200:
                raise EndpointError("peer %s refused the session: %d %s"
                                    % (self.to_path[-1], response.code, response.comment or ""),
                                    response.code)
            self._watch_first_hop()
            return self

        def unreachable(f):
            f.trap(SendError, TransactionError)
            raise EndpointError("cannot reach %s: %s" % (self.to_path[0], f.getErrorMessage()),
                                getattr(f.value, "code", None))

        return d.addCallbacks(opened, unreachable)

    # -- sending ---------------------------------------------------------------
    def send_message(self, content, content_type="text/plain", success_report=False, failure_report="yes",
                     chunk_size=None, progress=None, headers=(), message_id=None, window=None, to_path=None):
        """Send content (bytes, str, a file path or a binary file object).

        A str is the text itself for text/* types, else a file path (a
        pathlib.Path is always a file). ``to_path`` overrides the peer's
        path, e.g. with a received message's From-Path when one listening
        session serves several peers.

        Returns an OutgoingMessage whose ``result`` fires on delivery: the
        success REPORT when success_report is true, else every chunk's 200.
        """
        if self.closed:
            raise SessionClosed("session %s is closed" % self.session_id)
        if to_path is None:
            to_path = self.to_path
        if to_path is None:
            raise EndpointError("session has no peer path yet: call connect() first")
        if isinstance(content, str) and content_type.startswith("text/"):
            content = content.encode("utf-8")
        options = {}
        if window is not None:
            options["window"] = window
        sender = MessageSender(
            self.tm, list(to_path), [self.local_uri], content, content_type,
            message_id=message_id, chunk_size=chunk_size or self.chunk_size,
            success_report=success_report, failure_report=failure_report,
            headers=headers, progress=progress, tls=self.endpoint.tls, **options)
        out = OutgoingMessage(self, sender, success_report)
        self._outgoing[sender.message_id] = out
        sender.start()
        return out

    # -- receiving ---------------------------------------------------------------
    def _deliver(self, message):
        if self.to_path is None:
            # Passive side without a path yet: answer along the From-Path.
            try:
                self.to_path = list(message.request.from_path)
            except (URIError, AttributeError):
                pass
        if self.on_message is not None:
            try:
                self.on_message(message)
            except Exception:
                log.failure("on_message failed for {mid}", mid=message.message_id)
        else:
            self._queue.put(message)

    def _report_received(self, conn, request):
        out = self._outgoing.get(request.message_id)
        if out is None:
            log.debug("REPORT for unknown message {mid}", mid=request.message_id)
            return
        out.report_received(request)

    def _message_failed(self, entry, error):
        mid = getattr(entry, "message_id", "?")
        log.info("incoming message {mid} failed: {err}", mid=mid, err=error)
        if self.on_message_failed is not None:
            try:
                self.on_message_failed(mid, error)
            except Exception:
                log.failure("on_message_failed failed for {mid}", mid=mid)

    def next_message(self):
        """A Deferred firing with the next complete message (when no
        on_message callback is set); fails with SessionClosed once the
        session is closed and nothing is left."""
        if self.closed and not self._queue.pending:
            return defer.fail(SessionClosed("session %s is closed" % self.session_id))
        return self._queue.get()

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.next_message()
        except SessionClosed:
            raise StopAsyncIteration from None

    # -- keep-alive and close -------------------------------------------------
    def start_keepalive(self, interval, clock=None):
        """An empty SEND every interval seconds keeps connections and relay
        sessions from idling out; a failed one is logged. clock defaults to
        the session's clock."""
        self.stop_keepalive()

        def ping():
            if self.to_path is None or self.closed:
                return
            d = self.tm.send_request(self.to_path, [self.local_uri], "SEND",
                                     [("Message-ID", new_message_id())], tls=self.endpoint.tls)
            d.addErrback(lambda f: log.info("keep-alive of session {sid} failed: {err}",
                                            sid=self.session_id, err=f.getErrorMessage()))

        self._keepalive = task.LoopingCall(ping)
        self._keepalive.clock = clock if clock is not None else self.clock
        self._keepalive.start(interval, now=False)

    def stop_keepalive(self):
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._keepalive = None

    # -- reconnecting --------------------------------------------------------
    def _watch_first_hop(self):
        hop = self.use_paths[0] if self.use_paths else (self.to_path[0] if self.to_path else None)
        self._first_hop = self.tm.connections.find_connection(hop) if hop is not None else None

    def connection_closed(self, conn):
        """Called by the endpoint for every connection that closes."""
        if self.closed or conn is not self._first_hop or self.reconnect_policy is None:
            return
        self._first_hop = None
        if not self._reconnecting:
            log.info("session {sid} lost its connection to {peer}; reconnecting", sid=self.session_id,
                     peer=conn.peer)
            self._reconnecting = True
            self._schedule_reconnect(0)

    def _schedule_reconnect(self, attempt):
        delay = self.reconnect_policy.delay(attempt)
        self._reconnect_call = self.clock.callLater(delay, self._try_reconnect, attempt)

    def _try_reconnect(self, attempt):
        self._reconnect_call = None
        if self.closed:
            return

        def done(_):
            self._reconnecting = False
            log.info("session {sid} reconnected", sid=self.session_id)

        def failed(f):
            if self.closed:
                return None
            if attempt + 1 < self.reconnect_policy.attempts:
                log.info("session {sid}: reconnect attempt {n} failed: {err}", sid=self.session_id,
                         n=attempt + 1, err=f.getErrorMessage())
                self._schedule_reconnect(attempt + 1)
                return None
            self._reconnecting = False
            log.warn("session {sid}: giving up after {n} reconnect attempts: {err}", sid=self.session_id,
                     n=attempt + 1, err=f.getErrorMessage())
            if self.on_disconnected is not None:
                self.on_disconnected(self, f.value)
            return None

        self.reconnect().addCallbacks(done, failed)

    @defer.inlineCallbacks
    def reconnect(self):
        """Authenticate to the relays again (new Use-Paths) and, on the
        active side, open the connection to the peer again."""
        if self.closed:
            raise SessionClosed("session %s is closed" % self.session_id)
        if self.relays:
            yield self._authenticate_again()
        if self.peer_path is not None and self.active:
            yield self.connect(self.peer_path, active=True)
        else:
            self._watch_first_hop()
        return self

    # -- keeping the relays' sessions alive -----------------------------------
    def refresh_auth(self):
        """AUTH again at every relay, over the connection in use, before
        their sessions expire. A relay that keeps the session (ours does
        for the same connection and URI) answers with the same Use-Path; one
        that hands out a new one gets ``on_path_changed`` called. Fires with
        the session; done on its own at 2/3 of the shortest Expires."""
        if self.closed:
            return defer.fail(SessionClosed("session %s is closed" % self.session_id))
        if not self.relays:
            return defer.succeed(self)
        return self._authenticate_again().addCallback(lambda _: self)

    @defer.inlineCallbacks
    def _authenticate_again(self):
        use_paths, granted = yield self.endpoint._authenticate_relays(self.local_uri, self.relays, self.expires)
        if self.closed:
            return
        changed = use_paths != self.use_paths
        self.use_paths = use_paths
        if self.peer_path is not None:
            self.to_path = self.use_paths + self.peer_path
        self._schedule_auth_refresh(granted)
        if changed and self.on_path_changed is not None:
            self.on_path_changed(self)

    def _cancel_auth_refresh(self):
        call, self._auth_refresh_call = self._auth_refresh_call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule_auth_refresh(self, granted, share=AUTH_REFRESH_SHARE):
        self._cancel_auth_refresh()
        if granted is not None:
            self.auth_expires = granted
        if self.closed or not self.relays or self.auth_expires is None:
            return
        self._auth_refresh_call = self.clock.callLater(
            max(1.0, self.auth_expires * share), self._auth_refresh_due)

    def _auth_refresh_due(self):
        self._auth_refresh_call = None
        if self.closed or self._reconnecting:
            return  # a reconnect authenticates anyway

        def failed(f):
            if self.closed:
                return None
            # Half of what is left: another try or two before the expiry.
            log.warn("session {sid}: refreshing the AUTH at the relays failed: {err}; trying again",
                     sid=self.session_id, err=f.getErrorMessage())
            self._schedule_auth_refresh(None, (1 - AUTH_REFRESH_SHARE) / 2)
            return None

        self.refresh_auth().addErrback(failed)

    def close(self):
        if self.closed:
            return
        self.closed = True
        self._cancel_auth_refresh()
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        self.stop_keepalive()
        self.tm.remove_handler(self.receiver)
        self.receiver.close()
        for out in list(self._outgoing.values()):
            out.cancel()
        waiting, self._queue.waiting = self._queue.waiting, []
        for d in waiting:
            d.errback(SessionClosed("session %s is closed" % self.session_id))
        self.endpoint._session_closed(self)

"""Wires one MSRP relay service: listeners, transaction layer, relay,
HEP tracing and the AMP management service.

This is the only module that knows every layer; the layers below know
nothing about it.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from zope.interface import implementer

from .config import MSRPConfig
from .connections import ConnectionManager, parse_listener
from .mi import IManagement, ManagementFactory, describe_address, exposure_warning, read_secret
from .protocol import TransportSettings
from .transactions import TransactionManager

log = Logger()


class StartupError(Exception):
    """The service cannot start; the message says why (and names the setting)."""


def listen_management(reactor, config, backend, note=""):
    """Serve the MI for backend on config.mi, behind config's secret if it
    has one; a Deferred firing with the port once its address (and, when it
    is open beyond loopback, a warning) is logged, or failing with a
    StartupError naming the option at fault."""
    try:
        # Read again: the file may have changed since the options were checked.
        secret = read_secret(config.mi_secret_file) if config.mi_secret_file else None
    except ValueError as e:
        return defer.fail(StartupError("--mi-secret-file: %s" % e))

    def listening(port):
        log.info("MSRP management (AMP) on {mi} ({address}){note}", mi=config.mi,
                 address=describe_address(port.getHost()), note=note)
        exposed = exposure_warning(port.getHost(), secret is not None)
        if exposed:
            log.warn("{warning}", warning=exposed)
        return port

    def failed(f):
        raise StartupError("--mi: cannot listen on %s: %s" % (config.mi, f.getErrorMessage()))

    d = defer.maybeDeferred(lambda: serverFromString(reactor, config.mi).listen(ManagementFactory(backend, secret)))
    return d.addCallbacks(listening, failed)


@implementer(IManagement)
class MSRPService(service.Service):
    name = "msrp"

    def __init__(self, config=None, reactor=None, worker=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config if config is not None else MSRPConfig()
        # workers.WorkerContext when this is one of --workers N
        # processes (started by workers.WorkerPool), else None.
        self.worker = worker
        self.siblings = None
        self.connections = None
        self.transactions = None
        self.relay = None
        self.tracer = None
        self.users = None
        self.mi_port = None
        self._trace_sender = None
        self._closed_totals = dict.fromkeys(("messages_in", "messages_out", "bytes_in", "bytes_out"), 0)

    # -- building ----------------------------------------------------------
    def _tls_settings(self):
        c = self.config
        if not (c.tls_cert or c.tls_ca or c.tls_insecure or c.tls_verify_client):
            return None
        from .tls import TLSSettings

        return TLSSettings(
            cert_file=c.tls_cert, key_file=c.tls_key, ca_file=c.tls_ca,
            verify_client=bool(c.tls_verify_client), verify_server=not c.tls_insecure,
            ciphers=c.tls_ciphers)

    def _build(self):
        c = self.config
        settings = TransportSettings(
            send_timeout=c.send_timeout, max_msg_chunks=c.max_msg_chunks,
            tls_handshake_timeout=c.tls_handshake_timeout,
            cert_check_on_conn_reusage=c.cert_check_on_conn_reusage,
            msg_read_timeout=c.msg_read_timeout, idle_timeout=c.idle_timeout,
            max_body=c.max_chunk_size, max_connections_per_ip=c.max_connections_per_ip)
        try:
            tls = self._tls_settings()
        except ValueError as e:
            raise StartupError("TLS: %s" % e) from None
        self.tls = tls
        if c.tls_insecure:
            # Said at startup, not only when the first msrps connection is
            # made: an operator reading the start-up log must see it.
            log.warn("--tls-insecure is on: the certificates of msrps servers this relay connects to "
                     "are NOT verified, so its outbound TLS connections can be intercepted (labs only)")
        observers = [self]
        if c.trace_destination:
            from .tracing import Tracer, load_filter, open_sender, parse_trace_destination

            self._trace_sender = open_sender(parse_trace_destination(c.trace_destination), reactor=self.reactor)
            self.tracer = Tracer(
                self._trace_sender, reactor=self.reactor, enabled=bool(c.trace_on),
                capture_id=c.hep_capture_id, auth_key=c.hep_auth_key,
                connection_filter=load_filter(c.trace_filter) if c.trace_filter else None,
                trace_messages=bool(c.trace_messages), max_body=c.trace_max_body)
            observers.append(self.tracer)
        if self.worker is not None:
            from .relay.siblings import Siblings

            self.siblings = Siblings(self.worker.index, self.worker.count, self.reactor)
            observers.append(self.siblings)
        self.connections = ConnectionManager(settings=settings, reactor=self.reactor, tls=tls,
                                             observers=observers)
        self.connections.tracer = self.tracer
        self.transactions = TransactionManager(self.connections, self.reactor, c.transaction_timeout)
        from .relay.auth import CredentialsFileError, DigestAuthenticator, ExpiresPolicy, HtdigestFile

        if c.users:
            try:
                self.users = HtdigestFile(c.users, c.auth_realm, clock=self.reactor)
            except (OSError, ValueError, CredentialsFileError) as e:
                raise StartupError("--users: %s" % e) from None
        else:
            log.warn("no --users file: every AUTH will be refused (create one with htdigest or msrp-passwd)")
        authenticator = DigestAuthenticator(c.auth_realm, self.users if self.users is not None else {},
                                            self.reactor, nonce_expire=c.nonce_expire)
        policy = ExpiresPolicy(default=c.auth_expires, minimum=c.auth_min_expires, maximum=c.auth_max_expires)
        from .relay.relay import Relay

        from .limits import AuthThrottle

        throttle = AuthThrottle(self.reactor, c.auth_max_failures, c.auth_failure_window, c.auth_block_time)
        self.relay = Relay(self.transactions, [], authenticator, policy, reactor=self.reactor, tls=tls,
                           throttle=throttle, max_sessions_per_user=c.max_sessions_per_user,
                           siblings=self.siblings)

    # -- lifecycle -----------------------------------------------------------
    def startService(self):
        service.Service.startService(self)
        d = self.start()
        if d.called and not self.reactor.running:
            # Under twistd start() has normally finished before the reactor
            # runs: a failure ends the process with the reason (exit status
            # 1) instead of leaving a reactor running without a relay.
            failed = []
            d.addErrback(failed.append)
            if failed:
                reason = failed[0].getErrorMessage()
                log.critical("MSRP service failed to start: {reason}", reason=reason)
                raise SystemExit("msrp: cannot start: %s" % reason)
            return d
        d.addErrback(self._start_failed)
        return d

    def _start_failed(self, f):
        log.critical("MSRP service failed to start: {reason}", reason=f.getErrorMessage())
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)
        return None

    @defer.inlineCallbacks
    def start(self):
        """Build and listen; fails with StartupError naming what is wrong."""
        c = self.config
        if c.workers > 1 and self.worker is None:
            raise StartupError("--workers %d: this service is one process; build it with "
                               "msrp_twisted.tap.make_service(config) (as `twistd msrp` does) "
                               "to run several" % c.workers)
        self._build()
        for position, spec_text in enumerate(c.listen):
            spec = parse_listener(spec_text)
            try:
                if self.worker is not None:
                    port = self.worker.adopt(self.connections, position, spec)
                else:
                    port = yield self.connections.listen(spec)
            except Exception as e:
                self._abandon()
                raise StartupError("--listen: %s" % e) from None
            if not c.relay_uri:
                host = spec.host if ":" not in spec.host else "[%s]" % spec.host
                self.relay.add_uri("%s://%s:%d;tcp" % (spec.scheme, host, port.getHost().port))
        for uri in c.relay_uri:
            self.relay.add_uri(uri)
        if self.siblings is not None:
            try:
                yield self.siblings.start(self.connections, self.transactions, self.relay)
            except Exception as e:
                self._abandon()
                raise StartupError("worker %d: no private port for its siblings: %s"
                                   % (self.worker.index, e)) from None
        if c.mi and c.mi.lower() != "none":
            try:
                self.mi_port = yield listen_management(self.reactor, c, self)
            except StartupError:
                self._abandon()
                raise
        log.info("MSRP relay ready; URIs: {uris}", uris=" ".join(str(u) for u in self.relay.uris))
        return self

    def _abandon(self):
        """Undo a failed start without waiting for the ports to close, so
        the failure reaches twistd before its reactor runs (exit status 1)."""
        self._stop().addErrback(lambda f: log.failure("cleanup after a failed start", f))

    def stopService(self):
        service.Service.stopService(self)
        return self._stop()

    @defer.inlineCallbacks
    def _stop(self):
        if self.mi_port is not None:
            port, self.mi_port = self.mi_port, None
            yield port.stopListening()
        if self.siblings is not None:
            self.siblings.stop()
        if self.connections is not None:
            yield self.connections.stop_listening()
            self.connections.close_all()
        if self.relay is not None:
            self.relay.sessions.clear()
        if self._trace_sender is not None:
            self._trace_sender.close()
            self._trace_sender = None

    def connection_event(self, conn, event, success, message):
        """Keep the traffic of closed connections in the statistics."""
        if event == "CLOSED":
            totals = self._closed_totals
            for key in totals:
                totals[key] += getattr(conn, key, 0)

    # -- IManagement -----------------------------------------------------------
    def get_trace(self):
        return bool(self.tracer is not None and self.tracer.enabled)

    def set_trace(self, on):
        if self.tracer is None:
            if on:
                from .mi import BadArgument

                raise BadArgument("tracing needs a trace_destination (--trace-destination)")
            return
        self.tracer.enabled = bool(on)

    def list_connections(self):
        from .tls import peer_certificate_info

        now = self.reactor.seconds()
        out = []
        for conn in list(self.connections.connections.values()):
            subject = ""
            if conn.secure and conn.transport is not None:
                try:
                    info = peer_certificate_info(conn.transport)
                except Exception:
                    info = None
                if info:
                    subject = info.get("subject", "") or ""
            local_host = conn.local_host or "?"
            out.append({
                "peer": conn.peer,
                "local": "[%s]:%s" % (local_host, conn.local_port) if ":" in local_host
                else "%s:%s" % (local_host, conn.local_port),
                "scheme": conn.scheme,
                "direction": conn.direction,
                "age": now - conn.created if conn.created is not None else 0,
                "bytes_in": conn.bytes_in,
                "bytes_out": conn.bytes_out,
                "tls_peer_subject": subject,
            })
        return out

    def statistics(self):
        cm = self.connections
        conns = list(cm.connections.values())
        stats = {
            "connections_open": len(conns),
            "connections_accepted": cm.stats["connections_accepted"],
            "connections_connected": cm.stats["connections_opened"],
            "connect_failures": cm.stats["connect_failures"],
            "tls_failures": cm.stats["tls_failures"],
            "messages_in": sum(c.messages_in for c in conns) + self._closed_totals["messages_in"],
            "messages_out": sum(c.messages_out for c in conns) + self._closed_totals["messages_out"],
            "bytes_in": sum(c.bytes_in for c in conns) + self._closed_totals["bytes_in"],
            "bytes_out": sum(c.bytes_out for c in conns) + self._closed_totals["bytes_out"],
            "transactions_pending": self.transactions.pending_count,
            "traces_sent": 0,
            "traces_dropped": 0,
            "relay_sessions": len(self.relay.sessions),
        }
        for key, value in self.transactions.stats.items():
            stats["transactions_" + key if not key.startswith("transactions_") else key] = value
        for key, value in self.relay.stats.items():
            stats["relay_" + key] = value
        if self.relay.throttle is not None:
            for key, value in self.relay.throttle.stats.items():
                stats["relay_" + key] = value
        stats["connections_refused"] = cm.connection_cap.stats["connections_refused"]
        if self.siblings is not None:
            stats.update(self.siblings.counters())
        if self.tracer is not None:
            ts = self.tracer.stats
            stats["traces_sent"] = int(ts.get("sent", 0))
            stats["traces_dropped"] = int(ts.get("dropped", 0))
        return stats

    def list_sessions(self):
        return [{"session_id": s["session_id"], "user": s["user"], "client_peer": s["peer"],
                 "expires_in": s["expires_in"]} for s in self.relay.list_sessions()]

    def end_session(self, session_id):
        return self.relay.end_session(session_id)

    def reload_users(self):
        if self.users is None:
            raise ValueError("no users file configured (--users)")
        self.users.reload()

    def reload_tls(self):
        contexts = self.connections.tls_contexts()
        if not contexts:
            raise ValueError("no msrps listener to reload")
        for ctx in contexts:
            ctx.reload()
        from .tls import clear_client_creator_cache

        clear_client_creator_cache()

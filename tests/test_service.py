"""Running the relay: option checking, the TOML file, `twistd -n msrp`,
msrp.tac, and the management commands against a running MSRPService."""

import os
import shutil
import signal
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols import amp
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msrp_twisted import mi, tap
from msrp_twisted.config import OPTIONS, ConfigError, MSRPConfig, load_toml
from msrp_twisted.core import digest
from msrp_twisted.core.hep import decode_hep
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.service import MSRPService
from msrp_twisted.tls import TLSSettings, clear_client_creator_cache, peer_certificate_info
from tests.certs import get_test_pki
from tests.relay_helpers import AuthFailed, ClosingWatcher, Peer, TwistdProcess, write_users

USERS = {"alice": "wonderland", "bob": "builder"}
MSRP_TAC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "msrp.tac")
READY = r"MSRP relay ready; URIs: (\S+)"


def _tempdir(test):
    directory = tempfile.mkdtemp(prefix="msrp-service-test-")
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options.config


class OptionTests(SynchronousTestCase):
    def assertRejected(self, argv, *fragments):
        error = self.assertRaises(usage.UsageError, parse, *argv)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def test_defaults_give_a_relay_on_loopback(self):
        config = parse()
        self.assertEqual(config.listen, ["msrp:127.0.0.1:2855"])
        self.assertEqual(config.mi, "tcp:2856:interface=127.0.0.1")
        self.assertEqual((config.send_timeout, config.max_msg_chunks, config.tls_handshake_timeout,
                          config.cert_check_on_conn_reusage), (100, 4, 100, 0))
        self.assertEqual((config.auth_expires, config.nonce_expire, config.auth_realm),
                         (1800, 30, "msrp"))

    def test_bad_values_name_option_value_and_expectation(self):
        self.assertRejected(["--max-msg-chunks=-1"], "--max-msg-chunks", "-1", "expected 0..1000000")
        self.assertRejected(["--listen=foo"], "--listen", "'foo'", "msrp:IP[:PORT]")
        self.assertRejected(["--send-timeout=abc"], "--send-timeout", "'abc'", "whole number")
        self.assertRejected(["--tls-verify-client=maybe"], "--tls-verify-client", "'maybe'", "0 or 1")
        self.assertRejected(["--msg-read-timeout=soon"], "--msg-read-timeout", "'soon'", "not a number")
        self.assertRejected(["--transaction-timeout=0"], "--transaction-timeout", ">= 0.001")
        self.assertRejected(["--hep-capture-id=4294967296"], "--hep-capture-id", "4294967296",
                            "0..4294967295")
        self.assertRejected(["--listen=msrp:[::1"], "--listen", "msrp:[::1")
        self.assertRejected(["--listen=msrp:localhost:2855"], "--listen", "not an IP address")
        self.assertRejected(["--listen=msrp:127.0.0.1:70000"], "--listen", "70000", "out of range")
        self.assertRejected(["--listen=msrps:127.0.0.1:2855"], "--listen", "--tls-cert")
        self.assertRejected(["--auth-min-expires=600", "--auth-max-expires=300"],
                            "--auth-min-expires", "600", "--auth-max-expires")
        self.assertRejected(["--auth-expires=30"], "--auth-expires", "30", "60..3600")
        self.assertRejected(["--relay-uri=http://relay.example"], "--relay-uri", "http://relay.example")
        self.assertRejected(["--trace-destination=udp:"], "--trace-destination")
        self.assertRejected(["--max-chunk-size=-5"], "--max-chunk-size", "-5")
        self.assertRejected(["--no-such-option=1"], "no-such-option")

    def test_repeatable_options(self):
        config = parse("--listen", "msrp:127.0.0.1:0", "--listen", "msrp:[::1]:0",
                       "--relay-uri", "msrp://relay.example:2855;tcp",
                       "--relay-uri", "msrp://relay2.example:2855;tcp")
        self.assertEqual(config.listen, ["msrp:127.0.0.1:0", "msrp:[::1]:0"])
        self.assertEqual(len(config.relay_uri), 2)


class TOMLTests(SynchronousTestCase):
    def setUp(self):
        self.directory = _tempdir(self)

    def toml(self, text):
        return _write(os.path.join(self.directory, "msrp.toml"), text)

    def test_snake_case_keys_and_command_line_wins(self):
        path = self.toml(
            'listen = ["msrp:127.0.0.1:0", "msrp:[::1]:0"]\n'
            "send_timeout = 250\n"
            "max_msg_chunks = 8\n"
            "tls_verify_client = false\n"
            "trace_on = true\n"
            'trace_destination = "udp:127.0.0.1:9060"\n'
            "auth_expires = 900\n"
            'users = "/etc/msrp/users"\n')
        config = parse("--config", path, "--send-timeout", "300",
                       "--listen", "msrp:127.0.0.1:9999")
        self.assertEqual(config.send_timeout, 300)  # command line wins
        self.assertEqual(config.listen, ["msrp:127.0.0.1:9999"])  # replaces, not appends
        self.assertEqual(config.max_msg_chunks, 8)
        self.assertEqual((config.tls_verify_client, config.trace_on), (0, 1))
        self.assertEqual(config.auth_expires, 900)
        self.assertEqual(config.users, "/etc/msrp/users")
        self.assertEqual(parse("-c", path).listen, ["msrp:127.0.0.1:0", "msrp:[::1]:0"])

    def test_msrp_table(self):
        path = self.toml('[msrp]\nlisten = "msrp:127.0.0.1:0"\nnonce_expire = 10\n')
        config = parse("--config", path)
        self.assertEqual((config.listen, config.nonce_expire), (["msrp:127.0.0.1:0"], 10))

    def test_every_option_has_a_toml_key(self):
        for name in OPTIONS:
            self.assertIn(name, MSRPConfig.__dataclass_fields__)
        config = MSRPConfig.from_mapping({name: default for name, (default, _, _) in OPTIONS.items()
                                          if default is not None})
        self.assertEqual(config, MSRPConfig())

    def test_bad_files_are_explained(self):
        error = self.assertRaises(usage.UsageError, parse, "--config", self.toml("send_timeout = \n"))
        self.assertIn("is not valid TOML", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--config", self.toml("sendtimeout = 5\n"))
        self.assertIn("unknown setting 'sendtimeout'", str(error))
        self.assertIn("send_timeout", str(error))  # the known names are listed
        error = self.assertRaises(usage.UsageError, parse, "--config", self.toml('send_timeout = "x"\n'))
        self.assertIn("--send-timeout: 'x' is not a whole number", str(error))
        error = self.assertRaises(usage.UsageError, parse, "--config", self.toml("listen = 5\n"))
        self.assertIn("--listen: expected a list of strings, got 5", str(error))
        missing = os.path.join(self.directory, "missing.toml")
        error = self.assertRaises(usage.UsageError, parse, "--config", missing)
        self.assertIn("cannot read %s" % missing, str(error))

    def test_config_from_environment(self):
        path = self.toml('listen = ["msrp:127.0.0.1:0"]\nmi = "none"\n')
        config = tap.config_from_environment({"MSRP_CONFIG": path})
        self.assertEqual((config.listen, config.mi), (["msrp:127.0.0.1:0"], "none"))
        self.assertEqual(tap.config_from_environment({}), MSRPConfig())
        self.assertRaises(ConfigError, load_toml, os.path.join(self.directory, "missing.toml"))


class TwistdTests(TestCase):
    """`twistd -n msrp` and `twistd -ny msrp.tac` as child processes."""

    timeout = 60

    def setUp(self):
        self.directory = _tempdir(self)
        self.users_file = write_users(self.directory, USERS)
        self.peers = []

    def spawn(self, args, env=None):
        proc = TwistdProcess.spawn(reactor, args, env=env, path=self.directory)
        self.addCleanup(proc.stop)
        return proc

    @inlineCallbacks
    def close_peers(self):
        yield defer.gatherResults([p.close() for p in self.peers])

    @inlineCallbacks
    def check_auth(self, relay_uri):
        """A client is challenged, then admitted, with a valid rspauth."""
        peer = Peer("alice")
        self.peers.append(peer)
        self.addCleanup(self.close_peers)
        challenge = yield peer.request([relay_uri], "AUTH")
        self.assertEqual(challenge.code, 401)
        params = challenge.www_authenticate
        self.assertEqual((params["realm"], params["qop"], params["algorithm"]), ("msrp", "auth", "MD5"))
        creds = digest.make_authorization(params, "alice", USERS["alice"], "AUTH", str(relay_uri))
        response = yield peer.request([relay_uri], "AUTH",
                                      [("Authorization", digest.format_credentials(creds))])
        self.assertEqual(response.code, 200)
        self.assertEqual(response.use_path[0].port, relay_uri.port)
        self.assertEqual(response.expires, 1800)
        self.assertTrue(digest.check_rspauth(response.headers["Authentication-Info"], creds,
                                             USERS["alice"]))

    @inlineCallbacks
    def test_twistd_msrp_answers_auth(self):
        proc = self.spawn(["msrp", "--listen", "msrp:127.0.0.1:0", "--users", self.users_file,
                           "--mi", "none"])
        listening = yield proc.wait_for(r"MSRP listening on msrp:127\.0\.0\.1:(\d+)")
        ready = yield proc.wait_for(READY)
        relay_uri = parse_uri(ready.group(1))
        self.assertEqual(relay_uri.port, int(listening.group(1)))
        yield self.check_auth(relay_uri)
        yield self.close_peers()
        # twistd ends itself with the signal it got, after a clean shutdown.
        self.assertEqual((yield proc.stop()), -signal.SIGTERM)
        self.assertIn("Server Shut Down.", proc.output())
        self.assertNotIn("Traceback", proc.output())

    @inlineCallbacks
    def test_msrp_tac_reads_msrp_config(self):
        config = _write(os.path.join(self.directory, "relay.toml"),
                        'listen = ["msrp:127.0.0.1:0"]\nmi = "none"\nusers = "%s"\n' % self.users_file)
        proc = self.spawn(["-y", MSRP_TAC], env={"MSRP_CONFIG": config})
        ready = yield proc.wait_for(READY)
        yield self.check_auth(parse_uri(ready.group(1)))

    @inlineCallbacks
    def test_msrp_tac_runs_workers(self):
        config = _write(os.path.join(self.directory, "relay.toml"),
                        'listen = ["msrp:127.0.0.1:0"]\nmi = "none"\nworkers = 2\nusers = "%s"\n'
                        % self.users_file)
        proc = self.spawn(["-y", MSRP_TAC], env={"MSRP_CONFIG": config})
        ready = yield proc.wait_for(r"MSRP relay ready \(2 workers\); URIs: (\S+)")
        yield self.check_auth(parse_uri(ready.group(1)))

    @inlineCallbacks
    def test_msrp_tac_bad_config(self):
        config = _write(os.path.join(self.directory, "relay.toml"), 'send_timeout = "abc"\n')
        proc = self.spawn(["-y", MSRP_TAC], env={"MSRP_CONFIG": config})
        status = yield proc.wait_ended()
        self.assertNotEqual(status, 0)
        self.assertIn("msrp.tac: --send-timeout: 'abc' is not a whole number", proc.output())
        self.assertNotIn("Traceback", proc.output())

    @inlineCallbacks
    def test_bad_option_exits_with_the_reason(self):
        proc = self.spawn(["msrp", "--mi", "none", "--max-msg-chunks=-1"])
        self.assertEqual((yield proc.wait_ended()), 1)
        self.assertIn("--max-msg-chunks: -1 is out of range (expected 0..1000000)", proc.output())
        self.assertNotIn("Traceback", proc.output())

    @inlineCallbacks
    def test_start_failures_exit_with_the_reason(self):
        """What only fails when the service starts (unreadable users file,
        address in use) ends twistd with status 1 and the reason."""
        proc = self.spawn(["msrp", "--mi", "none", "--listen", "msrp:127.0.0.1:0",
                           "--users", os.path.join(self.directory, "missing")])
        self.assertEqual((yield proc.wait_ended()), 1)
        self.assertIn("msrp: cannot start: --users: Credentials file", proc.output())
        self.assertNotIn("Traceback", proc.output())

        busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        port = busy.getHost().port
        proc = self.spawn(["msrp", "--mi", "none", "--listen", "msrp:127.0.0.1:%d" % port])
        self.assertEqual((yield proc.wait_ended()), 1)
        self.assertIn("msrp: cannot start: --listen: cannot listen on msrp:127.0.0.1:%d" % port,
                      proc.output())

    @inlineCallbacks
    def test_help_lists_every_option(self):
        proc = self.spawn(["msrp", "--help"])
        self.assertEqual((yield proc.wait_ended()), 0)
        text = proc.output()
        for name in list(OPTIONS) + ["config"]:
            self.assertIn("--%s=" % name.replace("_", "-"), text)
        self.assertIn("MSRP relay", text)


class _Collector(DatagramProtocol):
    def __init__(self):
        self.datagrams = DeferredQueue()

    def datagramReceived(self, data, addr):
        self.datagrams.put(data)


class _MIServerSide(mi.ManagementProtocol):
    """The service's end of an MI connection, observable by the test."""

    def connectionMade(self):
        super().connectionMade()
        self.lost = Deferred()
        self.factory.server_sides.append(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.lost.callback(None)


class _MIClient(amp.AMP):
    def connectionMade(self):
        super().connectionMade()
        self.lost = Deferred()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.lost.callback(None)


class ManagementTests(TestCase):
    """The AMP commands over a real connection to a running service."""

    def setUp(self):
        self.directory = _tempdir(self)
        self.users_file = write_users(self.directory, {"alice": USERS["alice"]})
        self.peers = []
        self.addCleanup(clear_client_creator_cache)

    @inlineCallbacks
    def start(self, **options):
        settings = {"listen": ["msrp:127.0.0.1:0"], "users": self.users_file,
                    "mi": "tcp:0:interface=127.0.0.1"}
        settings.update(options)
        self.service = MSRPService(MSRPConfig.from_mapping(settings))
        yield self.service.start()
        watcher = ClosingWatcher(self.service.transactions)
        self.addCleanup(self.service.stopService)
        self.addCleanup(watcher.close_all)
        factory = self.service.mi_port.factory
        factory.protocol = _MIServerSide
        factory.server_sides = []
        self.relay_uri = self.service.relay.uris[0]
        port = self.service.mi_port.getHost().port
        self.mi = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _MIClient())
        self.addCleanup(self._close_mi, factory)

    @inlineCallbacks
    def _close_mi(self, factory):
        self.mi.transport.loseConnection()
        yield self.mi.lost
        yield defer.gatherResults([side.lost for side in factory.server_sides])

    def peer(self, name, **kw):
        p = Peer(name, **kw)
        self.peers.append(p)
        self.addCleanup(p.close)
        return p

    @inlineCallbacks
    def authenticated(self, name, password=None, **kw):
        p = self.peer(name, **kw)
        response = yield p.auth(self.relay_uri, name, password or USERS[name], expires=900)
        return p, response.use_path[0]

    def call(self, command, **arguments):
        return self.mi.callRemote(command, **arguments)

    @inlineCallbacks
    def test_msrp_trace(self):
        collector = _Collector()
        udp = reactor.listenUDP(0, collector, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        yield self.start(trace_destination="udp:127.0.0.1:%d" % udp.getHost().port)
        self.assertEqual((yield self.call(mi.MSRPTrace))["status"], "off")
        self.assertEqual((yield self.call(mi.MSRPTrace, trace_mode="on"))["status"], "on")
        self.assertTrue(self.service.tracer.enabled)
        yield self.authenticated("alice")
        packet = decode_hep((yield collector.datagrams.get()))
        self.assertIn(b"ACCEPTED", packet.payload)
        self.assertEqual(packet.dst_port, self.relay_uri.port)
        self.assertEqual((yield self.call(mi.MSRPTrace, trace_mode="OFF"))["status"], "off")
        self.assertFalse(self.service.tracer.enabled)
        yield self.assertFailure(self.call(mi.MSRPTrace, trace_mode="loud"), mi.BadArgument)

    @inlineCallbacks
    def test_mi_secret(self):
        """With mi_secret_file, the running service's MI answers only a
        client that proved it knows the secret."""
        secret = os.path.join(self.directory, "mi.secret")
        with open(secret, "wb") as f:
            f.write(b"a long enough management secret\n")
        yield self.start(mi_secret_file=secret)
        yield self.assertFailure(self.call(mi.Statistics), mi.NotAuthenticated)
        yield Deferred.fromCoroutine(mi.authenticate(self.mi, b"a long enough management secret"))
        counters = {c["name"]: c["value"] for c in (yield self.call(mi.Statistics))["counters"]}
        self.assertEqual(counters["relay_sessions"], 0)

    def test_mi_secret_file_must_hold_a_secret(self):
        short = os.path.join(self.directory, "short.secret")
        with open(short, "wb") as f:
            f.write(b"2short\n")
        for path, reason in ((short, "holds 6 bytes; an MI secret needs at least 16"),
                             (os.path.join(self.directory, "absent"), "cannot read")):
            with self.assertRaises(ConfigError) as e:
                MSRPConfig.from_mapping({"mi_secret_file": path})
            self.assertIn("--mi-secret-file: ", str(e.exception))
            self.assertIn(reason, str(e.exception))

    @inlineCallbacks
    def test_msrp_trace_needs_a_destination(self):
        yield self.start()
        error = yield self.assertFailure(self.call(mi.MSRPTrace, trace_mode="on"), mi.BadArgument)
        self.assertIn("trace_destination", str(error))
        self.assertEqual((yield self.call(mi.MSRPTrace))["status"], "off")

    @inlineCallbacks
    def test_statistics(self):
        yield self.start()
        yield self.authenticated("alice")
        counters = {c["name"]: c["value"] for c in (yield self.call(mi.Statistics))["counters"]}
        self.assertEqual(counters["relay_auth_challenged"], 1)
        self.assertEqual(counters["relay_auth_ok"], 1)
        self.assertEqual(counters["relay_sessions"], 1)
        self.assertEqual(counters["connections_open"], 1)
        self.assertEqual(counters["connections_accepted"], 1)
        self.assertEqual(counters["messages_in"], 2)
        self.assertEqual(counters["messages_out"], 2)
        self.assertGreater(counters["bytes_in"], 0)
        for name in ("transactions_pending", "transactions_timed_out", "traces_sent", "traces_dropped"):
            self.assertIn(name, counters)

    @inlineCallbacks
    def test_list_sessions_and_connections(self):
        yield self.start()
        write_users(self.directory, USERS)
        self.service.users.reload()
        a, ua = yield self.authenticated("alice")
        b, ub = yield self.authenticated("bob")
        sessions, total = yield mi.call_paged(self.mi, mi.ListSessions, "sessions")
        self.assertEqual(total, 2)
        by_user = {s["user"]: s for s in sessions}
        self.assertEqual(by_user["alice"]["session_id"], ua.session_id)
        self.assertEqual(by_user["bob"]["session_id"], ub.session_id)
        local_a = list(a.connections.connections.values())[0].local_port
        self.assertEqual(by_user["alice"]["client_peer"], "127.0.0.1:%d" % local_a)
        self.assertTrue(895 <= by_user["alice"]["expires_in"] <= 900)
        connections, total = yield mi.call_paged(self.mi, mi.ListConnections, "connections")
        self.assertEqual(total, 2)
        self.assertEqual({(c["scheme"], c["direction"]) for c in connections}, {("msrp", "in")})
        self.assertIn("127.0.0.1:%d" % local_a, [c["peer"] for c in connections])

    @inlineCallbacks
    def test_end_session(self):
        yield self.start()
        write_users(self.directory, USERS)
        self.service.users.reload()
        a, ua = yield self.authenticated("alice")
        b, ub = yield self.authenticated("bob")
        answer = yield self.call(mi.EndSession, session_id=ua.session_id)
        self.assertEqual(answer, {"session_id": ua.session_id, "status": "ended"})
        self.assertEqual((yield b.send([ub, ua, a.uri], b"hello?")).code, 481)
        error = yield self.assertFailure(self.call(mi.EndSession, session_id=ua.session_id),
                                         mi.UnknownSession)
        self.assertIn(ua.session_id, str(error))
        sessions, total = yield mi.call_paged(self.mi, mi.ListSessions, "sessions")
        self.assertEqual([s["user"] for s in sessions], ["bob"])

    @inlineCallbacks
    def test_reload_users(self):
        yield self.start()
        bob = self.peer("bob")
        failed = yield self.assertFailure(bob.auth(self.relay_uri, "bob", USERS["bob"]), AuthFailed)
        self.assertEqual(failed.response.code, 403)
        write_users(self.directory, USERS)
        self.assertEqual((yield self.call(mi.ReloadUsers))["status"], "ok")
        self.assertEqual(len(self.service.users), 2)  # the command loaded it
        yield bob.auth(self.relay_uri, "bob", USERS["bob"], nc=2)
        # A broken file is refused with the reason; the users stay.
        _write(self.users_file, "alice:msrp:not-a-hash\n")
        error = yield self.assertFailure(self.call(mi.ReloadUsers), mi.ReloadFailed)
        self.assertIn("line 1", str(error))
        self.assertIn("HA1", str(error))
        self.assertEqual(len(self.service.users), 2)

    @inlineCallbacks
    def test_reload_users_without_file(self):
        self.users_file = None
        yield self.start(users=None)
        error = yield self.assertFailure(self.call(mi.ReloadUsers), mi.ReloadFailed)
        self.assertIn("no users file", str(error))

    @inlineCallbacks
    def test_reload_tls(self):
        pki = get_test_pki()
        cert = shutil.copy(pki.server.cert, os.path.join(self.directory, "cert.pem"))
        key = shutil.copy(pki.server.key, os.path.join(self.directory, "key.pem"))
        yield self.start(listen=["msrps:127.0.0.1:0"], tls_cert=cert, tls_key=key,
                         tls_ca=pki.ca_bundle, tls_handshake_timeout=10000)
        client = dict(tls=TLSSettings(ca_file=pki.ca_bundle),
                      settings=TransportSettings(tls_handshake_timeout=10000), scheme="msrps")

        def served_fingerprint(peer):
            [conn] = peer.connections.connections.values()
            return peer_certificate_info(conn.transport)["fingerprint_sha256"]

        first, _ = yield self.authenticated("alice", **client)
        self.assertEqual(served_fingerprint(first), pki.server.fingerprint)
        shutil.copy(pki.server_alt.cert, cert)
        shutil.copy(pki.server_alt.key, key)
        self.assertEqual((yield self.call(mi.ReloadTLS))["status"], "ok")
        second, _ = yield self.authenticated("alice", **client)
        self.assertEqual(served_fingerprint(second), pki.server_alt.fingerprint)
        # Broken files are refused and the certificate in use stays.
        _write(cert, "not a certificate\n")
        error = yield self.assertFailure(self.call(mi.ReloadTLS), mi.ReloadFailed)
        self.assertIn("TLS reload failed", str(error))
        self.assertIn(cert, str(error))
        third, _ = yield self.authenticated("alice", **client)
        self.assertEqual(served_fingerprint(third), pki.server_alt.fingerprint)

    @inlineCallbacks
    def test_reload_tls_without_tls_listener(self):
        yield self.start()
        error = yield self.assertFailure(self.call(mi.ReloadTLS), mi.ReloadFailed)
        self.assertIn("no msrps listener", str(error))

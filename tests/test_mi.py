"""The MI service over real AMP connections, and the msrp-mi client."""

import io
import json
import os
import shutil
import stat
import sys
import tempfile

from twisted.internet import defer, error, reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from msrp_twisted import mi, mi_client


@implementer(mi.IManagement)
class FakeService:
    """Stands in for the MSRP service: records calls, answers from its fields.

    C{broken[name]} makes that method raise; C{pending[name]} makes it return
    that Deferred instead of an answer; C{called[name]} fires when it is called.
    """

    def __init__(self):
        self.trace = False
        self.connections = []
        self.sessions = {}
        self.counters = {}
        self.calls = []
        self.broken = {}
        self.pending = {}
        self.called = {}

    def _enter(self, name, *arguments):
        self.calls.append((name, *arguments))
        if name in self.called:
            self.called.pop(name).callback(None)
        if name in self.broken:
            raise self.broken[name]
        return self.pending.pop(name, None)

    def get_trace(self):
        return self._enter("get_trace") or self.trace

    def set_trace(self, on):
        waiting = self._enter("set_trace", on)
        self.trace = on
        return waiting

    def list_connections(self):
        return self._enter("list_connections") or self.connections

    def statistics(self):
        return self._enter("statistics") or self.counters

    def list_sessions(self):
        return self._enter("list_sessions") or list(self.sessions.values())

    def end_session(self, session_id):
        return self._enter("end_session", session_id) or (
            self.sessions.pop(session_id, None) is not None
        )

    def reload_users(self):
        return self._enter("reload_users")

    def reload_tls(self):
        return self._enter("reload_tls")


def connection(number, subject=""):
    return {
        "peer": f"192.0.2.{number % 250 + 1}:{10000 + number}",
        "local": "127.0.0.1:2855",
        "scheme": "msrps" if subject else "msrp",
        "direction": "in" if number % 2 else "out",
        "age": number / 4,
        "bytes_in": number * 3,
        "bytes_out": number * 5,
        "tls_peer_subject": subject,
    }


class _TrackedProtocol(mi.ManagementProtocol):
    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.lost.callback(None)


class _TrackingFactory(mi.ManagementFactory):
    """Keeps each server protocol so cleanup can wait for its connection to close."""

    protocol = _TrackedProtocol

    def __init__(self, backend, secret=None):
        super().__init__(backend, secret)
        self.protocols = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.lost = defer.Deferred()
        self.protocols.append(protocol)
        return protocol


class _Client(amp.AMP):
    def __init__(self):
        super().__init__()
        self.closed = defer.Deferred()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed.callback(None)


class ServerMixin:
    """A real MI server on loopback with a FakeService behind it."""

    async def listen(self, description="tcp:0:interface=127.0.0.1", secret=None):
        self.service = FakeService()
        self.factory = _TrackingFactory(self.service, secret)
        self.port = await serverFromString(reactor, description).listen(self.factory)
        self.addCleanup(self._stopServer)
        if description.startswith("tcp:"):
            self.endpointText = f"tcp:127.0.0.1:{self.port.getHost().port}"
        return self.port

    async def _stopServer(self):
        await self.port.stopListening()
        await defer.gatherResults([p.lost for p in self.factory.protocols])

    async def connect(self, endpoint=None):
        if endpoint is None:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = await connectProtocol(endpoint, _Client())
        self.addCleanup(self._close, client)
        return client

    async def _close(self, client):
        if client.transport is not None:
            client.transport.loseConnection()
        await client.closed

    def captureLog(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def miLines(self, events):
        return [formatEvent(e) for e in events if formatEvent(e).startswith("MI ")]


class TraceTests(ServerMixin, unittest.TestCase):
    async def test_without_argument_reports_state(self):
        await self.listen()
        client = await self.connect()
        self.assertEqual(await client.callRemote(mi.MSRPTrace), {"status": "off"})
        self.assertEqual(self.service.calls, [("get_trace",)])

    async def test_on_and_off_any_case_and_the_state_persists(self):
        await self.listen()
        client = await self.connect()
        self.assertEqual(await client.callRemote(mi.MSRPTrace, trace_mode="on"), {"status": "on"})
        self.assertEqual(await client.callRemote(mi.MSRPTrace), {"status": "on"})
        other = await self.connect()
        self.assertEqual(await other.callRemote(mi.MSRPTrace), {"status": "on"})
        self.assertEqual(await client.callRemote(mi.MSRPTrace, trace_mode="OFF"), {"status": "off"})
        self.assertEqual(await other.callRemote(mi.MSRPTrace), {"status": "off"})
        self.assertEqual(
            [call for call in self.service.calls if call[0] == "set_trace"],
            [("set_trace", True), ("set_trace", False)],
        )

    async def test_status_is_read_back_from_the_service(self):
        await self.listen()
        client = await self.connect()
        self.service.set_trace = lambda on: None  # a service that ignores the switch
        self.assertEqual(await client.callRemote(mi.MSRPTrace, trace_mode="on"), {"status": "off"})

    async def test_bad_value_names_the_accepted_values(self):
        await self.listen()
        client = await self.connect()
        for bad in ["yes", "", "on "]:
            failure = await self.assertFailure(
                client.callRemote(mi.MSRPTrace, trace_mode=bad), mi.BadArgument
            )
            self.assertEqual(
                str(failure), f"trace_mode must be 'on' or 'off', not {bad!r}"
            )
        self.assertNotIn("set_trace", [call[0] for call in self.service.calls])
        self.assertEqual(await client.callRemote(mi.MSRPTrace), {"status": "off"})

    async def test_each_command_is_logged_with_peer_and_outcome(self):
        events = self.captureLog()
        await self.listen()
        client = await self.connect()
        await client.callRemote(mi.MSRPTrace, trace_mode="on")
        await self.assertFailure(client.callRemote(mi.MSRPTrace, trace_mode="maybe"), mi.BadArgument)
        peer = client.transport.getHost()
        self.assertEqual(
            self.miLines(events),
            [
                f"MI 127.0.0.1:{peer.port} msrp_trace: ok status=on",
                f"MI 127.0.0.1:{peer.port} msrp_trace: refused: "
                "trace_mode must be 'on' or 'off', not 'maybe'",
            ],
        )


class ListTests(ServerMixin, unittest.TestCase):
    async def test_ten_thousand_connections_are_paged(self):
        await self.listen()
        client = await self.connect()
        self.service.connections = [connection(n) for n in range(10000)]
        first = await client.callRemote(mi.ListConnections, offset=0, limit=10**6)
        self.assertEqual(first["total"], 10000)
        self.assertTrue(0 < len(first["connections"]) <= mi.MAX_PAGE_SIZE)
        self.assertEqual(first["connections"][0], connection(0))

        entries, total = await mi.call_paged(client, mi.ListConnections, "connections")
        self.assertEqual(total, 10000)
        self.assertEqual(entries, self.service.connections)
        pages = self.service.calls.count(("list_connections",)) - 1
        self.assertGreater(pages, 10000 // mi.MAX_PAGE_SIZE)

    async def test_pages_shrink_to_fit_long_entries(self):
        await self.listen()
        client = await self.connect()
        long_subject = "/CN=" + "\N{LATIN SMALL LETTER E WITH ACUTE}" * 3000
        self.service.connections = [connection(n, long_subject) for n in range(300)]
        page = await client.callRemote(mi.ListConnections, limit=300)
        self.assertLess(len(page["connections"]), 300)
        entries, total = await mi.call_paged(client, mi.ListConnections, "connections")
        self.assertEqual((len(entries), total), (300, 300))
        subject = entries[0]["tls_peer_subject"]
        self.assertLessEqual(len(subject.encode("utf-8")), mi.MAX_TEXT_BYTES)
        self.assertTrue(long_subject.startswith(subject[:-1]))
        self.assertTrue(subject.endswith("\N{HORIZONTAL ELLIPSIS}"))

    async def test_page_arguments_are_checked(self):
        await self.listen()
        client = await self.connect()
        self.service.connections = [connection(n) for n in range(3)]
        failure = await self.assertFailure(
            client.callRemote(mi.ListConnections, offset=-1), mi.BadArgument
        )
        self.assertEqual(str(failure), "offset must be 0 or more, not -1")
        failure = await self.assertFailure(
            client.callRemote(mi.ListSessions, limit=0), mi.BadArgument
        )
        self.assertEqual(str(failure), f"limit must be between 1 and {mi.MAX_PAGE_SIZE}, not 0")
        beyond = await client.callRemote(mi.ListConnections, offset=5)
        self.assertEqual(beyond, {"total": 3, "connections": []})
        middle = await client.callRemote(mi.ListConnections, offset=1, limit=1)
        self.assertEqual(middle, {"total": 3, "connections": [connection(1)]})

    async def test_addresses_and_missing_subjects_are_rendered(self):
        await self.listen()
        client = await self.connect()
        self.service.connections = [
            {
                "peer": IPv6Address("TCP", "::1", 5000),
                "local": IPv4Address("TCP", "127.0.0.1", 2855),
                "scheme": "msrp",
                "direction": "in",
                "age": 1.5,
                "bytes_in": 1,
                "bytes_out": 2,
                "tls_peer_subject": None,
            }
        ]
        page = await client.callRemote(mi.ListConnections)
        entry = page["connections"][0]
        self.assertEqual(
            (entry["peer"], entry["local"], entry["tls_peer_subject"]),
            ("[::1]:5000", "127.0.0.1:2855", ""),
        )

    async def test_sessions(self):
        await self.listen()
        client = await self.connect()
        self.service.sessions = {
            f"s{n}": {"session_id": f"s{n}", "user": "alice", "client_peer": "192.0.2.1:7", "expires_in": 30.0}
            for n in range(2500)
        }
        entries, total = await mi.call_paged(client, mi.ListSessions, "sessions")
        self.assertEqual(total, 2500)
        self.assertEqual(entries, list(self.service.sessions.values()))

    async def test_malformed_entry_from_the_service_is_a_clean_error(self):
        await self.listen()
        client = await self.connect()
        self.service.connections = [{"local": "127.0.0.1:2855"}]
        failure = await self.assertFailure(client.callRemote(mi.ListConnections), mi.InternalError)
        self.assertEqual(
            str(failure),
            "list_connections failed inside the service (ValueError: entry has no 'peer')",
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class CommandTests(ServerMixin, unittest.TestCase):
    async def test_statistics(self):
        await self.listen()
        client = await self.connect()
        self.service.counters = {"messages_in": 7, "connections_open": 2, "traces_dropped": 0}
        response = await client.callRemote(mi.Statistics)
        self.assertEqual(
            response["counters"],
            [
                {"name": "connections_open", "value": 2},
                {"name": "messages_in", "value": 7},
                {"name": "traces_dropped", "value": 0},
            ],
        )

    async def test_end_session_known_and_unknown(self):
        await self.listen()
        client = await self.connect()
        self.service.sessions = {"abc": {"session_id": "abc"}}
        self.assertEqual(
            await client.callRemote(mi.EndSession, session_id="abc"),
            {"session_id": "abc", "status": "ended"},
        )
        failure = await self.assertFailure(
            client.callRemote(mi.EndSession, session_id="abc"), mi.UnknownSession
        )
        self.assertEqual(str(failure), "no relay session with id 'abc'")
        self.assertEqual(self.service.calls, [("end_session", "abc")] * 2)

    async def test_reloads_succeed_or_carry_the_reason(self):
        await self.listen()
        client = await self.connect()
        self.assertEqual(await client.callRemote(mi.ReloadUsers), {"status": "ok"})
        self.service.broken["reload_tls"] = OSError("cannot read /etc/msrp/key.pem: Permission denied")
        failure = await self.assertFailure(client.callRemote(mi.ReloadTLS), mi.ReloadFailed)
        self.assertEqual(
            str(failure), "TLS reload failed: cannot read /etc/msrp/key.pem: Permission denied"
        )
        self.service.pending["reload_users"] = defer.fail(ValueError("users.txt line 3: no password"))
        failure = await self.assertFailure(client.callRemote(mi.ReloadUsers), mi.ReloadFailed)
        self.assertEqual(str(failure), "user reload failed: users.txt line 3: no password")

    async def test_service_exception_becomes_a_clean_error(self):
        events = self.captureLog()
        await self.listen()
        client = await self.connect()
        self.service.broken["statistics"] = RuntimeError("counter table gone")
        failure = await self.assertFailure(client.callRemote(mi.Statistics), mi.InternalError)
        self.assertEqual(
            str(failure),
            "statistics failed inside the service (RuntimeError: counter table gone)",
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # The connection survives for the next command.
        self.assertEqual(await client.callRemote(mi.MSRPTrace), {"status": "off"})
        peer = client.transport.getHost()
        self.assertEqual(
            self.miLines(events),
            [
                f"MI 127.0.0.1:{peer.port} statistics: the service raised an unexpected error",
                f"MI 127.0.0.1:{peer.port} statistics: refused: statistics failed inside "
                "the service (RuntimeError: counter table gone)",
                f"MI 127.0.0.1:{peer.port} msrp_trace: ok status=off",
            ],
        )

    async def test_client_leaving_mid_command_is_harmless(self):
        events = self.captureLog()
        await self.listen()
        client = await self.connect()
        answer = self.service.pending["statistics"] = defer.Deferred()
        reloading = self.service.pending["reload_tls"] = defer.Deferred()
        asked = self.service.called["reload_tls"] = defer.Deferred()
        pending = [client.callRemote(mi.Statistics), client.callRemote(mi.ReloadTLS)]
        await asked
        client.transport.loseConnection()
        for request in pending:
            await self.assertFailure(request, error.ConnectionDone)
        await self.factory.protocols[0].lost
        answer.callback({"messages_in": 1})
        reloading.errback(OSError("no such file"))
        lines = self.miLines(events)
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].endswith("statistics: ok (client went away, answer dropped) counters=1"))
        self.assertTrue(
            lines[1].endswith(
                "reload_tls: refused: TLS reload failed: no such file "
                "(client went away, answer dropped)"
            )
        )

    def test_factory_needs_an_imanagement_provider(self):
        verifyObject(mi.IManagement, FakeService())
        with self.assertRaises(TypeError):
            mi.ManagementFactory(object())


class UnixSocketTests(ServerMixin, unittest.TestCase):
    async def test_commands_over_a_unix_socket(self):
        directory = tempfile.mkdtemp(prefix="msrp-mi-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "mi.sock")
        events = self.captureLog()
        # The access control a UNIX socket gives: its file mode.
        await self.listen(f"unix:{path}:mode=600")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.service.connections = [connection(1)]
        client = await self.connect(UNIXClientEndpoint(reactor, path))
        self.assertEqual(await client.callRemote(mi.MSRPTrace, trace_mode="on"), {"status": "on"})
        self.assertEqual(self.miLines(events), ["MI unix:(unnamed) msrp_trace: ok status=on"])

        out, err, code = await run_cli("--connect", f"unix:{path}", "list_connections")
        self.assertEqual((err, code), (b"", 0))
        self.assertEqual(json.loads(out), {"connections": [connection(1)], "total": 1})


class ExposureTests(unittest.SynchronousTestCase):
    def test_only_addresses_beyond_this_host_are_flagged(self):
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        for address in (IPv4Address("TCP", "127.0.0.1", 2856), IPv4Address("TCP", "127.3.0.1", 2856),
                        IPv6Address("TCP", "::1", 2856), UNIXAddress(b"/run/msrp/mi.sock")):
            self.assertIsNone(mi.exposure_warning(address), address)
        for address, shown in ((IPv4Address("TCP", "0.0.0.0", 2856), "0.0.0.0:2856"),
                               (IPv4Address("TCP", "192.0.2.7", 2856), "192.0.2.7:2856"),
                               (IPv6Address("TCP", "::", 2856), "[::]:2856")):
            warning = mi.exposure_warning(address)
            self.assertIn("MI on %s is reachable from other hosts" % shown, warning)
            self.assertIn("unix:/run/msrp/mi.sock:mode=600", warning)


SECRET = b"correct horse battery staple 42"


class SecretTests(ServerMixin, unittest.TestCase):
    """An MI with a secret, over a real AMP connection."""

    def secret_file(self, data=SECRET, mode=0o600):
        directory = tempfile.mkdtemp(prefix="msrp-mi-secret-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "mi.secret")
        with open(path, "wb") as f:
            f.write(data + b"\n")
        os.chmod(path, mode)
        return path

    async def test_commands_refused_until_authenticated(self):
        events = self.captureLog()
        await self.listen(secret=SECRET)
        client = await self.connect()
        with self.assertRaises(mi.NotAuthenticated) as refused:
            await client.callRemote(mi.MSRPTrace, trace_mode="on")
        self.assertIn("needs its secret", refused.exception.message)
        self.assertFalse(self.service.trace)
        self.assertEqual(await mi.authenticate(client, SECRET), {"status": "ok"})
        self.assertEqual(await client.callRemote(mi.MSRPTrace, trace_mode="on"), {"status": "on"})
        self.assertTrue(self.service.trace)
        self.assertIn("MI 127.0.0.1:%d msrp_trace: refused: this MI needs its secret first "
                      "(msrp-mi --secret-file)" % client.transport.getHost().port, self.miLines(events))

    async def test_wrong_secret_and_replayed_nonce_fail(self):
        await self.listen(secret=SECRET)
        client = await self.connect()
        with self.assertRaises(mi.AuthenticationFailed) as wrong:
            await mi.authenticate(client, b"not the secret, but long enough")
        self.assertEqual(wrong.exception.message, "wrong secret")
        # A proof for a nonce already used (here: seen on the wire) does not count.
        nonce = (await client.callRemote(mi.Challenge))["nonce"]
        proof = mi.prove(SECRET, nonce)
        self.assertEqual(await client.callRemote(mi.Authenticate, proof=proof), {"status": "ok"})
        other = await self.connect()
        with self.assertRaises(mi.AuthenticationFailed) as replayed:
            await other.callRemote(mi.Authenticate, proof=proof)
        self.assertIn("ask for a challenge first", replayed.exception.message)
        with self.assertRaises(mi.NotAuthenticated):
            await other.callRemote(mi.Statistics)

    async def test_nonces_differ(self):
        await self.listen(secret=SECRET)
        client = await self.connect()
        nonces = {(await client.callRemote(mi.Challenge))["nonce"] for _ in range(5)}
        self.assertEqual(len(nonces), 5)

    async def test_without_a_secret_nothing_is_asked(self):
        await self.listen()
        client = await self.connect()
        self.assertEqual(await client.callRemote(mi.MSRPTrace), {"status": "off"})
        self.assertEqual(await mi.authenticate(client, SECRET), {"status": "ok"})

    def test_short_or_missing_secret_files_are_refused(self):
        with self.assertRaises(ValueError) as short:
            mi.read_secret(self.secret_file(b"short"))
        self.assertIn("holds 5 bytes; an MI secret needs at least 16", str(short.exception))
        with self.assertRaises(ValueError) as missing:
            mi.read_secret(os.path.join(tempfile.gettempdir(), "msrp-no-such-secret"))
        self.assertIn("cannot read", str(missing.exception))
        self.assertEqual(mi.read_secret(self.secret_file()), SECRET)

    async def test_cli_with_and_without_the_secret(self):
        await self.listen(secret=SECRET)
        path = self.secret_file()
        out, err, code = await run_cli("--connect", self.endpointText, "--secret-file", path, "msrp_trace", "on")
        self.assertEqual((out, err, code), (b'{\n  "status": "on"\n}\n', b"", 0))
        out, err, code = await run_cli("--connect", self.endpointText, "statistics")
        self.assertEqual((out, code), (b"", 1))
        self.assertEqual(err.decode(), "msrp-mi: statistics refused: the MI service at %s needs its secret "
                         "(--secret-file or $MSRP_MI_SECRET_FILE)\n" % self.endpointText)
        wrong = self.secret_file(b"0123456789abcdef-wrong")
        out, err, code = await run_cli("--connect", self.endpointText, "-s", wrong, "statistics")
        self.assertEqual((out, code), (b"", 1))
        self.assertEqual(err.decode(), "msrp-mi: the MI service at %s refused the secret: wrong secret\n"
                         % self.endpointText)
        out, err, code = await run_cli("--connect", self.endpointText, "-s", self.secret_file(b"tiny"), "statistics")
        self.assertEqual(code, 2)
        self.assertIn("--secret-file: ", err.decode())
        self.assertNotIn("Traceback", err.decode())


def run_cli(*arguments):
    return getProcessOutputAndValue(
        sys.executable, ["-m", "msrp_twisted.mi_client", *arguments], env=dict(os.environ)
    )


class CommandLineTests(ServerMixin, unittest.TestCase):
    """msrp-mi run as a real process against the real server."""

    async def test_success_prints_sorted_indented_json(self):
        await self.listen()
        out, err, code = await run_cli("--connect", self.endpointText, "msrp_trace", "on")
        self.assertEqual((out, err, code), (b'{\n  "status": "on"\n}\n', b"", 0))
        self.assertTrue(self.service.trace)

    async def test_unknown_command_is_a_usage_error(self):
        out, err, code = await run_cli("--connect", "tcp:127.0.0.1:9", "frobnicate")
        self.assertEqual((out, code), (b"", 2))
        self.assertEqual(
            err.decode().splitlines()[0],
            "msrp-mi: error: unknown command 'frobnicate' (known commands: end_session, "
            "list_connections, list_sessions, msrp_trace, reload_tls, reload_users, statistics)",
        )
        self.assertNotIn(b"Traceback", err)

    async def test_unreachable_service_names_the_endpoint(self):
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Factory())
        target = f"tcp:127.0.0.1:{port.getHost().port}"
        await port.stopListening()
        out, err, code = await run_cli("--connect", target, "statistics")
        self.assertEqual((out, code), (b"", 1))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(
            err.startswith(f"msrp-mi: cannot reach the MI service at {target}: ".encode()), err
        )
        self.assertIn(b"refused", err)

    async def test_bad_trace_value_prints_the_service_message(self):
        await self.listen()
        out, err, code = await run_cli("-c", self.endpointText, "msrp_trace", "sometimes")
        self.assertEqual(
            (out, err, code),
            (
                b"",
                b"msrp-mi: msrp_trace failed: trace_mode must be 'on' or 'off', "
                b"not 'sometimes'\n",
                1,
            ),
        )


class ClientInProcessTests(ServerMixin, unittest.TestCase):
    """The client's logic driven in this process, with captured output."""

    def parse(self, *arguments):
        config = mi_client.Options()
        config.parseOptions(list(arguments))
        return config

    async def runClient(self, *arguments, clock=None):
        out, err = io.StringIO(), io.StringIO()
        code = await mi_client.run(reactor, self.parse(*arguments), out, err, clock=clock)
        return out.getvalue(), err.getvalue(), code

    async def test_list_connections_fetches_every_page(self):
        await self.listen()
        self.service.connections = [connection(n) for n in range(10000)]
        out, err, code = await self.runClient("--connect", self.endpointText, "list_connections")
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(json.loads(out), {"connections": self.service.connections, "total": 10000})

    async def test_statistics_and_end_session(self):
        await self.listen()
        self.service.counters = {"relay_sessions": 1, "bytes_in": 10}
        out, err, code = await self.runClient("-c", self.endpointText, "statistics")
        self.assertEqual(
            (out, err, code), ('{\n  "bytes_in": 10,\n  "relay_sessions": 1\n}\n', "", 0)
        )
        out, err, code = await self.runClient("-c", self.endpointText, "end_session", "nope")
        self.assertEqual(
            (out, err, code), ("", "msrp-mi: end_session failed: no relay session with id 'nope'\n", 1)
        )

    async def test_missing_unix_socket(self):
        target = "unix:" + os.path.join(tempfile.gettempdir(), "msrp-mi-test-absent", "mi.sock")
        out, err, code = await self.runClient("-c", target, "reload_tls")
        self.assertEqual((out, code), ("", 1))
        self.assertTrue(err.startswith(f"msrp-mi: cannot reach the MI service at {target}: "), err)

    async def test_unanswered_command_times_out(self):
        clock = Clock()
        received = defer.Deferred()
        lost = defer.Deferred()

        class Silent(Protocol):
            def dataReceived(self, data):
                if not received.called:
                    received.callback(data)

            def connectionLost(self, reason):
                lost.callback(None)

        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(Silent)
        )
        self.addCleanup(port.stopListening)
        target = f"tcp:127.0.0.1:{port.getHost().port}"
        running = defer.ensureDeferred(
            self.runClient("-c", target, "--timeout", "2.5", "statistics", clock=clock)
        )
        self.assertIn(b"statistics", await received)
        clock.advance(2.5)
        out, err, code = await running
        self.assertEqual(
            (out, err, code), ("", f"msrp-mi: no answer from the MI service at {target} within 2.5s\n", 1)
        )
        await lost

    async def test_bad_endpoint_is_a_usage_error(self):
        out, err, code = await self.runClient("-c", "carrier-pigeon:home", "statistics")
        self.assertEqual((out, code), ("", 2))
        self.assertTrue(err.startswith("msrp-mi: error: bad --connect endpoint 'carrier-pigeon:home' ("))
        self.assertTrue(err.endswith("; expected tcp:HOST:PORT or unix:PATH\n"))

    def test_usage_errors_exit_2_without_touching_the_network(self):
        cases = [
            ([], "msrp-mi: error: no command given (known commands: end_session, "),
            (["end_session"], "msrp-mi: error: wrong arguments; usage: end_session SESSION_ID"),
            (["msrp_trace", "on", "off"], "msrp-mi: error: wrong arguments; usage: msrp_trace [on|off]"),
            (["--timeout", "0", "statistics"], "msrp-mi: error: --timeout must be more than 0, not 0.0"),
            (["--bogus", "statistics"], "msrp-mi: error: option --bogus not recognized"),
        ]
        for argv, message in cases:
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            self.assertEqual(mi_client.main(argv), 2, argv)
            self.assertTrue(err.getvalue().startswith(message), err.getvalue())

    def test_help_lists_commands_and_the_default_endpoint(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(mi_client.main(["--help"]), 0)
        self.assertIn("end_session SESSION_ID", out.getvalue())
        words = " ".join(out.getvalue().split())  # however the columns wrap
        self.assertIn("[default: tcp:127.0.0.1:2856]", words)
        self.assertIn("--secret-file", words)

"""Stateful property tests (issue 9): hypothesis drives random sequences of
operations against the transaction layer and the relay's session table,
and checks them step by step against a small model of what must be true.

The transaction layer runs on the in-memory Wire harness of
tests/test_transactions.py (MSRPProtocol on StringTransport, fake clock, no
transport timers), so the only delayed calls on the clock are transaction
timers and can be compared with the model one for one.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.connections import SendError
from msrp_twisted.core.errors import SerializationError
from msrp_twisted.core.message import Response
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.relay.sessions import SessionTable
from msrp_twisted.transactions import TransactionConnectionLost, TransactionTimeout

from .test_transactions import A, Node, results, send

# Default example counts (100 sequences of up to 50 steps); no deadline,
# since a slow CI machine is not a failure, and no example database, so the
# tree stays clean.
SETTINGS = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

TIMEOUT = 10.0
WIRES = 3
# A few explicit transaction ids, so that the same id is live on two
# connections at once and a response on the wrong one can look right.
SHARED_TIDS = ("sharedtid1", "sharedtid2")


class Tx:
    """The model of one request that got a transaction."""

    def __init__(self, wire, request, deadline, partial, deferred, out):
        self.wire = wire
        self.request = request
        self.deadline = deadline
        self.partial = partial
        self.deferred = deferred
        self.out = out  # what the Deferred fired with, appended by addBoth
        self.default_timeout = False  # queued on the manager's shared timer
        self.expected = None  # (kind, detail) once finished

    @property
    def key(self):
        return (self.wire.conn.conn_id, self.request.tid)


class TransactionMachine(RuleBasedStateMachine):
    """Requests, responses on the right or wrong connection, time, losses
    and cancellations, in any order."""

    def __init__(self):
        super().__init__()
        self.node = Node(timeout=TIMEOUT)
        self.clock = self.node.clock
        self.tm = self.node.tm
        self.wires = [self.node.wire() for _ in range(WIRES)]
        # (conn_id, tid) -> Tx. Rules pick from it in insertion order, not
        # sorted: tids are random, so a sorted pick would differ between a
        # run and hypothesis's replay of it, and a failure could not shrink.
        self.pending = {}
        self.finished = []
        self.sent = []  # every request sent, to answer later
        self.counts = dict.fromkeys(
            ("responses_received", "responses_unmatched", "transactions_timed_out",
             "transactions_failed", "partial_completed"), 0)

    def _finish(self, tx, kind, detail=None):
        del self.pending[tx.key]
        tx.expected = (kind, detail)
        self.finished.append(tx)

    def _open(self, index):
        return not self.wires[index].conn.closed

    # -- rules ----------------------------------------------------------------

    @rule(index=st.integers(0, WIRES - 1),
          kind=st.sampled_from(["plain", "partial", "report", "failure-report-no"]),
          tid=st.one_of(st.none(), st.sampled_from(SHARED_TIDS)),
          timeout=st.one_of(st.none(), st.sampled_from([0.5, 1.0, 5.0, 20.0])))
    def send_request(self, index, kind, tid, timeout):
        wire = self.wires[index]
        if kind == "report":
            args = send(method="REPORT", body=None,
                        headers=[("Byte-Range", "1-2/2"), ("Status", "000 200 OK")])
        elif kind == "failure-report-no":
            args = send(headers=[("Failure-Report", "no")])
        elif kind == "partial":
            args = send(headers=[("Failure-Report", "partial")])
        else:
            args = send()
        deferred = self.tm.send_request(conn=wire.conn, tid=tid, timeout=timeout, **args)
        out = results(deferred)
        if wire.conn.closed:
            assert len(out) == 1 and out[0].check(SendError), out
            return
        if kind in ("report", "failure-report-no"):
            # No transaction, so no clash with a live one of the same id.
            assert out == [None], out
            [request] = wire.received()
            self.sent.append(request)
            return
        if tid is not None and (wire.conn.conn_id, tid) in self.pending:
            assert len(out) == 1 and out[0].check(SerializationError), out
            assert wire.received() == []
            return
        [request] = wire.received()
        self.sent.append(request)
        assert out == [], out
        deadline = self.clock.seconds() + (TIMEOUT if timeout is None else timeout)
        tx = Tx(wire, request, deadline, kind == "partial", deferred, out)
        tx.default_timeout = timeout is None or timeout == TIMEOUT
        self.pending[tx.key] = tx

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), code=st.sampled_from([200, 403, 413, 481]))
    def respond_on_the_right_connection(self, data, code):
        tx = self.pending[data.draw(st.sampled_from(list(self.pending)))]
        tx.wire.respond(tx.request, code)
        self.counts["responses_received"] += 1
        self._finish(tx, "response", code)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), shift=st.integers(1, WIRES - 1), code=st.sampled_from([200, 481]))
    def respond_on_another_connection(self, data, shift, code):
        tx = self.pending[data.draw(st.sampled_from(list(self.pending)))]
        index = (self.wires.index(tx.wire) + shift) % WIRES
        self._deliver(tx.request, index, code)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), index=st.integers(0, WIRES - 1), code=st.sampled_from([200, 481]))
    def respond_on_any_connection(self, data, index, code):
        """A response to some request ever sent, on some open connection:
        the wrong one, a late one, a second one, or the right one."""
        request = data.draw(st.sampled_from(self.sent))
        self._deliver(request, index, code)

    def _deliver(self, request, index, code):
        if not self._open(index):
            return
        wire = self.wires[index]
        tx = self.pending.get((wire.conn.conn_id, request.tid))
        wire.respond(request, code)
        if tx is None:
            self.counts["responses_unmatched"] += 1
        else:
            # Only a transaction with this id on this connection completes.
            self.counts["responses_received"] += 1
            self._finish(tx, "response", code)

    @rule(index=st.integers(0, WIRES - 1))
    def response_to_nothing(self, index):
        if self._open(index):
            self.wires[index].feed(Response("nosuchtid9", 200, None, [
                ("To-Path", A), ("From-Path", A)]).to_bytes())
            self.counts["responses_unmatched"] += 1

    @rule(dt=st.sampled_from([0, 0.25, 0.5, 1, 4.75, 5, 9.99, 10, 30]))
    def advance_clock(self, dt):
        self.clock.advance(dt)
        now = self.clock.seconds()
        for tx in sorted(self.pending.values(), key=lambda t: t.deadline):
            if tx.deadline <= now:
                if tx.partial:
                    self.counts["partial_completed"] += 1
                    self._finish(tx, "success", None)
                else:
                    self.counts["transactions_timed_out"] += 1
                    self._finish(tx, "failure", TransactionTimeout)

    @rule(index=st.integers(0, WIRES - 1))
    def lose_connection(self, index):
        wire = self.wires[index]
        if wire.conn.closed:
            # A new connection takes the closed one's place.
            self.wires[index] = self.node.wire()
            return
        wire.lose()
        for tx in list(self.pending.values()):
            if tx.wire is wire:
                self.counts["transactions_failed"] += 1
                self._finish(tx, "failure", TransactionConnectionLost)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data):
        tx = self.pending[data.draw(st.sampled_from(list(self.pending)))]
        tx.deferred.cancel()
        self._finish(tx, "failure", CancelledError)

    # -- invariants -----------------------------------------------------------

    @invariant()
    def pending_matches_the_model(self):
        assert self.tm.pending_count == len(self.pending), (self.tm.pending_count, sorted(self.pending))
        assert set(self.tm._pending) == set(self.pending)
        index = {(conn_id, tid) for conn_id, tids in self.tm._by_conn.items() for tid in tids}
        assert index == set(self.pending), (index, set(self.pending))
        for tx in self.pending.values():
            assert tx.out == [], tx.out

    @invariant()
    def timers_match_the_model(self):
        """No delayed call leaks. A transaction with its own timeout has a
        timer due at its deadline; those with the manager's default share
        one timer, due no later than the earliest of their deadlines, and
        present only while there is one. Nothing else is on the clock."""
        calls = sorted(c.getTime() for c in self.clock.getDelayedCalls())
        assert all(c.active() for c in self.clock.getDelayedCalls())
        own = sorted(tx.deadline for tx in self.pending.values() if not tx.default_timeout)
        shared = [tx.deadline for tx in self.pending.values() if tx.default_timeout]
        for t in own:
            assert t in calls, (t, calls)
            calls.remove(t)
        if shared:
            assert len(calls) == 1 and calls[0] <= min(shared), (calls, shared)
        else:
            assert calls == [], calls

    @invariant()
    def each_transaction_finished_once_as_expected(self):
        for tx in self.finished:
            assert len(tx.out) == 1, (tx.key, tx.out)
            [result] = tx.out
            kind, detail = tx.expected
            if kind == "response":
                assert isinstance(result, Response) and result.code == detail, result
                assert result.tid == tx.request.tid
            elif kind == "success":
                assert result is None, result
            else:
                assert isinstance(result, Failure) and result.check(detail), (detail, result)
                if detail is not CancelledError:
                    assert result.value.tid == tx.request.tid

    @invariant()
    def statistics_match_the_model(self):
        stats = self.tm.stats
        for name, value in self.counts.items():
            assert stats[name] == value, (name, stats[name], value)


# -- the relay's session table ---------------------------------------------------

RELAY = parse_uri("msrps://relay.example.com:2855;tcp")
CLIENT = parse_uri(A)
CONNS = 3


class ModelSession:
    def __init__(self, user, conn, expires_at):
        self.user = user
        self.conn = conn
        self.expires_at = expires_at


class SessionTableMachine(RuleBasedStateMachine):
    """AUTH sessions created, refreshed, ended, expired and dropped with
    their connections, in any order."""

    sessions = Bundle("sessions")

    def __init__(self):
        super().__init__()
        self.clock = task.Clock()
        self.table = SessionTable(self.clock)
        # Real connections (MSRPProtocol on StringTransport) on a clock of
        # their own, so the table's clock holds only session timers.
        self.node = Node()
        self.conns = [self.node.wire().conn for _ in range(CONNS)]
        self.model = {}
        self.issued = set()
        # What find() answers: the session made last for a connection, user,
        # client URI and relay URI, while it lives (the relay only creates
        # one when find() has none).
        self.latest = {}
        self.stats = {"sessions_created": 0, "sessions_expired": 0, "sessions_ended": 0}

    @rule(target=sessions, index=st.integers(0, CONNS - 1),
          user=st.sampled_from(["alice", "bob"]), lifetime=st.integers(0, 60))
    def create(self, index, user, lifetime):
        conn = self.conns[index]
        session = self.table.create(user, conn, CLIENT, RELAY, lifetime)
        sid = session.session_id
        assert sid not in self.issued, sid
        self.issued.add(sid)
        assert session.use_path.session_id == sid
        assert session.use_path.with_session(None) == RELAY
        assert session.client_uri == CLIENT and session.user == user and session.conn is conn
        self.model[sid] = ModelSession(user, conn, self.clock.seconds() + lifetime)
        self.latest[(conn.conn_id, user)] = sid
        self.stats["sessions_created"] += 1
        return session

    @rule(session=sessions, lifetime=st.integers(0, 60))
    def refresh(self, session, lifetime):
        self.table.refresh(session, lifetime)
        entry = self.model.get(session.session_id)
        if entry is not None:
            entry.expires_at = self.clock.seconds() + lifetime
        # A removed session is not brought back by a refresh: checked by
        # the invariants (no entry, no timer).

    @rule(session=sessions)
    def end(self, session):
        ended = self.table.end(session.session_id)
        assert ended == (session.session_id in self.model)
        if ended:
            del self.model[session.session_id]
            self.stats["sessions_ended"] += 1

    @rule(sid=st.text(alphabet="abcdefghij-_", min_size=1, max_size=20))
    def end_unknown(self, sid):
        if sid not in self.model:
            assert self.table.end(sid) is False

    @rule(dt=st.sampled_from([0, 1, 5, 15, 30, 61]))
    def advance_clock(self, dt):
        self.clock.advance(dt)
        now = self.clock.seconds()
        for sid, entry in list(self.model.items()):
            if entry.expires_at <= now:
                del self.model[sid]
                self.stats["sessions_expired"] += 1

    @rule(index=st.integers(0, CONNS - 1))
    def connection_lost(self, index):
        conn = self.conns[index]
        self.table.connection_lost(conn)
        for sid, entry in list(self.model.items()):
            if entry.conn is conn:
                del self.model[sid]
                self.stats["sessions_ended"] += 1
        # The client reconnects on a new connection.
        self.conns[index] = self.node.wire().conn

    @invariant()
    def table_matches_the_model(self):
        live = {s.session_id: (s.user, s.conn.conn_id, s.expires_at) for s in self.table}
        want = {sid: (e.user, e.conn.conn_id, e.expires_at) for sid, e in self.model.items()}
        assert live == want, (live, want)
        assert len(self.table) == len(self.model)
        for sid in self.issued - set(self.model):
            assert self.table.get(sid) is None, sid

    @invariant()
    def one_timer_per_live_session(self):
        """Each live session has one active timer due at its expiry; removed
        sessions have none, and nothing else is on the clock."""
        timers = []
        for s in self.table:
            assert s.timer is not None and s.timer.active(), s.session_id
            assert s.timer.getTime() == s.expires_at, (s.timer.getTime(), s.expires_at)
            timers.append(s.timer)
        calls = self.clock.getDelayedCalls()
        assert len(calls) == len(timers) and set(map(id, calls)) == set(map(id, timers))

    @invariant()
    def connection_index_is_consistent(self):
        by_conn = {}
        for sid, entry in self.model.items():
            by_conn.setdefault(entry.conn.conn_id, set()).add(sid)
        assert self.table._by_conn == by_conn, (self.table._by_conn, by_conn)

    @invariant()
    def find_answers_the_latest_live_session(self):
        for conn in self.conns:
            for user in ("alice", "bob"):
                sid = self.latest.get((conn.conn_id, user))
                found = self.table.find(conn, user, CLIENT, RELAY.with_session("other"))
                want = sid if sid in self.model else None
                assert (found and found.session_id) == want, (found, want)
        assert len(self.table._by_client) <= len(self.model)

    @invariant()
    def connections_kept_alive_for_their_sessions(self):
        for entry in self.model.values():
            assert entry.conn.min_lifetime_until >= entry.expires_at

    @invariant()
    def statistics_match_the_model(self):
        assert self.table.stats == self.stats, (self.table.stats, self.stats)


class TransactionLayerStateTests(SynchronousTestCase):
    def test_transaction_layer(self):
        run_state_machine_as_test(TransactionMachine, settings=SETTINGS)


class SessionTableStateTests(SynchronousTestCase):
    def test_session_table(self):
        run_state_machine_as_test(SessionTableMachine, settings=SETTINGS)

"""Coverage-guided fuzzing of the sans-IO core (issue 9).

    python bench/fuzz.py parser [--seconds 60] [-runs=N] [other libFuzzer flags]
    python bench/fuzz.py all --seconds 180        # each target in turn
    python bench/fuzz.py parser --engine random   # no atheris: seeded mutation

Targets, and what each one asserts for every input:

parser
    Random bytes fed to ``Parser`` whole and split at pseudo-random points
    (byte by byte for some inputs), with the default limits and with small
    ones. Only FramingError escapes ``feed()``, a dead parser stays dead,
    events follow the message grammar, every InvalidMessage carries a
    MessageError with a valid transaction id, the events do not depend on
    the cuts, the typed header accessors raise only URIError/HeaderError, and
    every message that parses serializes to bytes that parse to the same
    message (round trip).
uri
    ``parse_uri``/``parse_path`` raise only URIError; what parses formats to
    text that parses to an equal URI with the same fields, and formatting
    is a fixed point.
digest
    The three digest header parsers raise only HeaderError; parsed
    parameters format and parse back unchanged; a parsed challenge is
    answered and the answer verifies.
hep
    ``decode_hep`` and ``HEPStreamDecoder`` raise only HEPDecodeError; a
    decoded packet encodes (in both chunk orders) to bytes that decode to an
    equal packet; stream decoding does not depend on the cuts.

The atheris engine runs libFuzzer in a child process (libFuzzer ends the
process when it is done) and prints a summary from its statistics. A
property failure or an unexpected exception is recorded and fuzzing goes on:
the first input of each distinct failure is written to ``WORKDIR/crashes``
and its traceback printed. New coverage-increasing inputs go to
``WORKDIR/corpus``; the seeds in ``tests/fuzz_corpus/TARGET`` are read only.
Exit status: 0 when no failure was found.
"""

import argparse
import collections
import hashlib
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "tests", "fuzz_corpus")
DEFAULT_SECONDS = 60
DEFAULT_MAX_LEN = 4096


class Violation(AssertionError):
    """A property of the target does not hold for this input."""


def check(condition, what, *details):
    if not condition:
        raise Violation(what + "".join("\n  %r" % (d,) for d in details))


# The modules under test, imported on first use so that the atheris child
# can import them inside instrument_imports() (coverage needs that).
core = None


def load_core():
    global core
    if core is None:
        import types

        from msrp_twisted.core import abnf, digest, errors, hep, parser, serializer, uri

        core = types.SimpleNamespace(
            abnf=abnf, digest=digest, errors=errors, hep=hep, parser=parser,
            serializer=serializer, uri=uri)
    return core


def cuts(data, rng, byte_by_byte_below=1024):
    """Pieces of data as a TCP stream might deliver them: a few random cuts,
    or (rarely: it is slow) one byte at a time."""
    if not data:
        return [data]
    if len(data) < byte_by_byte_below and rng.random() < 0.05:
        return [data[i:i + 1] for i in range(len(data))]
    points = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(1, 8)))
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def _rng_for(data):
    """Cuts derived from the input itself, so that a saved input replays."""
    return random.Random(zlib.crc32(data))


# -- parser ---------------------------------------------------------------------

# (max_start_line, max_header_block, max_body): the defaults, and small ones
# that make every limit reachable with inputs of a few hundred bytes.
PARSER_LIMITS = (None, (64, 384, 256))
# Limits no serialized message of a fuzz input can reach (the round trip may
# add a byte per header: "Name:value" becomes "Name: value").
_NO_LIMITS = dict(max_start_line=1 << 30, max_header_block=1 << 30, max_body=0)

_TYPED_ACCESSORS = (
    "to_path", "from_path", "use_path", "message_id", "content_type", "content_id",
    "byte_range", "success_report", "failure_report", "status", "expires",
    "min_expires", "max_expires", "www_authenticate", "authorization",
    "authentication_info",
)


def _make_parser(limits):
    if limits is None:
        return core.parser.Parser()
    start, head, body = limits
    return core.parser.Parser(max_start_line=start, max_header_block=head, max_body=body)


def _head_key(message):
    if message.is_request:
        first = ("request", message.tid, message.method)
    else:
        # "MSRP t 200 " (empty comment) and "MSRP t 200" mean the same; the
        # serializer writes the latter for both.
        first = ("response", message.tid, message.code, message.comment or None)
    return first + (tuple(message.headers.items()), message.has_body)


def summarize(events):
    """Events as comparable tuples, checking the event grammar on the way.

    Returns (items, messages): complete messages become ("message", head,
    body, flag), invalid frames ("invalid", ...), a message still receiving
    its body ("partial", head, body so far); messages lists the complete
    Message objects with body and flag set, for the round trip.
    """
    p = core.parser
    items, messages = [], []
    current = None
    for ev in events:
        t = type(ev)
        if t is p.MessageStart:
            check(current is None, "MessageStart inside a message", ev)
            check(ev.message.body is None, "MessageStart carries a body", ev)
            current = (ev.message, [])
        elif t is p.BodyData:
            check(current is not None, "BodyData outside a message", ev)
            check(current[0].has_body, "BodyData for a message without body", current[0])
            check(type(ev.data) is bytes and len(ev.data) > 0, "empty or non-bytes BodyData", ev.data)
            current[1].append(ev.data)
        elif t is p.MessageEnd:
            check(current is not None, "MessageEnd outside a message", ev)
            check(ev.flag in ("$", "+", "#"), "bad continuation flag", ev.flag)
            message, parts = current
            body = b"".join(parts)
            check(message.has_body or not body, "body bytes for a message without body")
            items.append(("message", _head_key(message), body, ev.flag))
            message.body = body if message.has_body else None
            message.flag = ev.flag
            messages.append(message)
            current = None
        elif t is p.InvalidMessage:
            check(current is None, "InvalidMessage inside a message", ev)
            error = ev.error
            check(isinstance(error, core.errors.MessageError), "InvalidMessage without a MessageError", error)
            check(isinstance(error.tid, str) and core.abnf.IDENT_STR_RE.match(error.tid),
                  "InvalidMessage without a valid transaction id", error.tid)
            check(isinstance(error.code, int) and 400 <= error.code <= 599, "bad error code", error.code)
            check(isinstance(error.reason, str) and error.reason, "no reason", error.reason)
            items.append(("invalid", error.tid, error.reason, error.method, error.is_request, error.code))
        else:
            raise Violation("unknown event %r" % (ev,))
    if current is not None:
        items.append(("partial", _head_key(current[0]), b"".join(current[1])))
    return items, messages


def _run_parser(pieces, limits):
    """Feed pieces; return (events, failed). Only FramingError may escape."""
    parser = _make_parser(limits)
    events = []
    for piece in pieces:
        try:
            events.extend(parser.feed(piece))
        except core.errors.FramingError as e:
            check(isinstance(e.events, list), "FramingError without .events", e)
            events.extend(e.events)
            try:
                parser.feed(b"MSRP ")
            except core.errors.FramingError:
                pass
            else:
                raise Violation("parser accepted input after a FramingError")
            return events, True, parser
    return events, False, parser


def _without_partial_body(items):
    return [i[:2] if i[0] == "partial" else i for i in items]


def _check_typed_headers(message):
    allowed = (core.errors.URIError, core.errors.HeaderError)
    for name in _TYPED_ACCESSORS:
        try:
            getattr(message, name)
        except allowed:
            pass


def _check_round_trip(message):
    tid = message.tid
    try:
        data = core.serializer.serialize(message)
    except core.errors.SerializationError as e:
        # The one refusal allowed: the body holds what would be read as the
        # start of its own end-line, which a sender must avoid by choosing
        # another transaction id (RFC 4975 section 7.1).
        check(message.body is not None and (b"-------" + tid.encode("ascii")) in message.body,
              "serializer refuses a parsed message", message, str(e))
        return
    again = core.parser.Parser(**_NO_LIMITS)
    try:
        events = again.feed(data)
    except core.errors.FramingError as e:
        raise Violation("serialized message does not frame: %s" % e) from None
    items, _ = summarize(events)
    body = message.body if message.has_body else b""
    want = [("message", _head_key(message), body, message.flag)]
    check(items == want, "round trip changed the message", data, want, items)
    check(not again.in_message, "bytes left after a serialized message", data)


def check_parser(data):
    load_core()
    rng = _rng_for(data)
    for limits in PARSER_LIMITS:
        whole_events, whole_failed, whole = _run_parser([data], limits)
        pieces = cuts(data, rng)
        split_events, split_failed, split = _run_parser(pieces, limits)
        whole_items, messages = summarize(whole_events)
        split_items, _ = summarize(split_events)
        check(whole_failed == split_failed, "framing error depends on the cuts",
              limits, [len(p) for p in pieces], whole_failed, split_failed)
        if whole_failed:
            # Body bytes already handed out before the error may differ.
            whole_items = _without_partial_body(whole_items)
            split_items = _without_partial_body(split_items)
        else:
            check((whole.in_message, whole.in_body) == (split.in_message, split.in_body),
                  "parser state depends on the cuts", limits, [len(p) for p in pieces])
        check(whole_items == split_items, "events depend on the cuts",
              limits, [len(p) for p in pieces], whole_items, split_items)
        for message in messages:
            _check_typed_headers(message)
            _check_round_trip(message)


# -- uri ------------------------------------------------------------------------

_URI_FIELDS = ("scheme", "userinfo", "host", "port", "session_id", "transport", "params")


def _fields(u):
    return tuple(getattr(u, name) for name in _URI_FIELDS)


def _check_one_uri(u):
    uri = core.uri
    text = str(u)
    again = uri.parse_uri(text)
    check(again == u and hash(again) == hash(u), "formatted URI parses to another URI", text, u, again)
    check(_fields(again) == _fields(u), "formatted URI changes its fields", text, _fields(u), _fields(again))
    check(str(again) == text, "formatting is not a fixed point", text, str(again))
    check(uri.MSRPURI(u.host, u.port, u.session_id, u.transport, u.scheme, u.userinfo, u.params) == u,
          "constructor disagrees with the parser", text)
    check(pickle.loads(pickle.dumps(u)) == u, "pickle round trip", text)
    check(u.with_session(u.session_id) == u, "with_session changes the URI", text)
    u.with_session(None)
    u.authority, u.hostport, u.host_key, u.secure, u.effective_port  # noqa: B018
    check(1 <= u.effective_port <= 65535, "port out of range", u.effective_port)


def check_uri(data):
    load_core()
    uri = core.uri
    text = data.decode("latin-1")
    for source in (data, text):
        for require_transport in (True, False):
            try:
                u = uri.parse_uri(source, require_transport)
            except uri.URIError:
                pass
            else:
                check(require_transport is False or u.transport, "no transport", source)
                _check_one_uri(u)
            try:
                path = uri.parse_path(source, require_transport)
            except uri.URIError:
                continue
            check(isinstance(path, tuple) and path, "empty path parsed", source)
            for u in path:
                _check_one_uri(u)
            formatted = uri.format_path(path)
            check(uri.parse_path(formatted) == path, "formatted path parses to another path",
                  source, formatted)


# -- digest ---------------------------------------------------------------------

_PASSWORD = "s3cret"
_DIGEST_URI = "msrps://relay.example.com:2855;tcp"


def check_digest(data):
    load_core()
    d = core.digest
    HeaderError = core.errors.HeaderError
    text = data.decode("utf-8", "replace")
    pairs = ((d.parse_challenge, d.format_challenge),
             (d.parse_credentials, d.format_credentials),
             (d.parse_auth_info, d.format_auth_info))
    parsed = []
    for parse, format_ in pairs:
        try:
            params = parse(text)
        except HeaderError:
            parsed.append(None)
            continue
        check(isinstance(params, dict) and params, "no parameters", params)
        check(all(k == k.lower() for k in params), "names not lower-cased", params)
        parsed.append(params)
        try:
            formatted = format_(params)
        except core.errors.SerializationError:
            # Allowed: a parameter that must go out bare (algorithm, stale,
            # qop, nc) arrived quoted with a value that is not a token.
            bare = {d.format_challenge: d._CHALLENGE_TOKENS,
                    d.format_credentials: d._CREDENTIALS_TOKENS,
                    d.format_auth_info: d._AUTH_INFO_TOKENS}[format_]
            check(any(k in bare and not d._is_token(v) for k, v in params.items()),
                  "a parsed header cannot be formatted", text, params)
            continue
        again = parse(formatted)
        check(again == params, "formatted header parses differently", formatted, params, again)
    challenge, credentials, auth_info = parsed
    if challenge is not None:
        try:
            creds = d.make_authorization(challenge, "alice", _PASSWORD, "AUTH", _DIGEST_URI,
                                         nc=1, cnonce="0a4f113b")
        except HeaderError:
            pass
        else:
            sent = d.format_credentials(creds)
            check(d.parse_credentials(sent) == creds, "credentials do not round trip", sent)
            ha1 = d.compute_ha1("alice", creds["realm"], _PASSWORD)
            expected = d.compute_response(ha1, creds["nonce"], creds.get("nc"), creds.get("cnonce"),
                                          creds.get("qop"), "AUTH", _DIGEST_URI, creds.get("algorithm"))
            check(expected == creds["response"], "response digest does not verify", creds)
            proof = {"rspauth": d.compute_rspauth(ha1, creds["nonce"], creds.get("nc"),
                                                  creds.get("cnonce"), creds.get("qop"),
                                                  _DIGEST_URI, creds.get("algorithm", "MD5"))}
            for name in ("qop", "cnonce", "nc"):
                if name in creds:
                    proof[name] = creds[name]
            check(d.check_rspauth(d.format_auth_info(proof), creds, _PASSWORD) is True,
                  "a correct rspauth is refused", creds, proof)
    if auth_info is not None:
        creds = {"username": "alice", "realm": "r", "nonce": "n", "uri": _DIGEST_URI,
                 "qop": "auth", "nc": "00000001", "cnonce": "c"}
        try:
            result = d.check_rspauth(auth_info, creds, _PASSWORD)
        except HeaderError:
            pass
        else:
            check(result in (True, False), "check_rspauth returned a non-bool", result)


# -- hep ------------------------------------------------------------------------


def _hep_stream(pieces):
    decoder = core.hep.HEPStreamDecoder()
    packets = []
    for piece in pieces:
        try:
            packets.extend(decoder.feed(piece))
        except core.hep.HEPDecodeError as e:
            packets.extend(e.packets)
            try:
                decoder.feed(b"HEP3")
            except core.hep.HEPDecodeError:
                return packets, True
            raise Violation("stream decoder accepted input after an error") from None
    return packets, False


def check_hep(data):
    load_core()
    hep = core.hep
    try:
        packet = hep.decode_hep(data)
    except hep.HEPDecodeError:
        packet = None
    if packet is not None:
        for order in (hep.OPENSIPS_ORDER, hep.SPEC_ORDER):
            try:
                encoded = hep.encode_hep(packet, order)
            except hep.HEPEncodeError as e:
                raise Violation("a decoded packet cannot be encoded: %s" % e) from None
            check(len(encoded) == len(data), "re-encoded packet has another length",
                  len(data), len(encoded))
            again = hep.decode_hep(encoded)
            check(again == packet, "re-encoded packet decodes differently", packet, again)
    rng = _rng_for(data)
    stream = data + data
    whole, whole_failed = _hep_stream([stream])
    split, split_failed = _hep_stream(cuts(stream, rng))
    check(whole_failed == split_failed and whole == split, "stream decoding depends on the cuts",
          whole_failed, split_failed)
    if packet is not None:
        check(whole == [packet, packet] and not whole_failed,
              "stream decoder disagrees with decode_hep", whole, whole_failed)


TARGETS = {
    "parser": check_parser,
    "uri": check_uri,
    "digest": check_digest,
    "hep": check_hep,
}


# -- recording failures -----------------------------------------------------------


class Recorder:
    """Runs a target on inputs; records the first input of each failure."""

    def __init__(self, target, crash_dir=None, out=sys.stderr):
        self.check = TARGETS[target]
        self.crash_dir = crash_dir
        self.out = out
        self.inputs = 0
        self.failures = {}  # signature -> (input, traceback text)

    def __call__(self, data):
        self.inputs += 1
        try:
            self.check(data)
        except Exception as e:
            self._record(data, e)

    @staticmethod
    def signature(error):
        """Same kind of failure at the same place: type, deepest frame of
        the project's code, and for Violations the property's name."""
        package = os.path.dirname(os.path.dirname(os.path.abspath(load_core().parser.__file__)))
        frames = traceback.extract_tb(error.__traceback__)
        ours = [f for f in frames if os.path.abspath(f.filename).startswith(package + os.sep)]
        ours = ours or frames[-1:]
        where = "%s:%d" % (os.path.basename(ours[-1].filename), ours[-1].lineno) if ours else "?"
        what = str(error).split("\n", 1)[0] if isinstance(error, Violation) else ""
        return "%s at %s %s" % (type(error).__name__, where, what)

    def _record(self, data, error):
        sig = self.signature(error)
        if sig in self.failures:
            return
        text = "".join(traceback.format_exception(error))
        self.failures[sig] = (data, text)
        path = ""
        if self.crash_dir:
            os.makedirs(self.crash_dir, exist_ok=True)
            path = os.path.join(self.crash_dir, "crash-" + hashlib.sha1(data).hexdigest())
            with open(path, "wb") as f:
                f.write(data)
        self.out.write("\n=== FUZZ FAILURE %d: %s\ninput (%d bytes): %r\nsaved to: %s\n%s\n" % (
            len(self.failures), sig, len(data), data[:400], path or "-", text))
        self.out.flush()


# -- engines --------------------------------------------------------------------


def seed_inputs(target, corpus_dir=None):
    directory = corpus_dir or os.path.join(SEEDS, target)
    seeds = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            seeds.append(f.read())
    return seeds


def dictionary_tokens(target):
    """Tokens of the libFuzzer dictionary (tests/fuzz_corpus/TARGET.dict)."""
    tokens = []
    path = os.path.join(SEEDS, target + ".dict")
    if os.path.exists(path):
        with open(path, encoding="ascii") as f:
            for line in f:
                m = re.match(r'\s*[A-Za-z0-9_]*\s*=?\s*"(.*)"\s*$', line)
                if m and not line.lstrip().startswith("#"):
                    tokens.append(m.group(1).encode("latin-1").decode("unicode_escape").encode("latin-1"))
    return tokens


def mutate(data, rng, seeds, tokens, max_len=DEFAULT_MAX_LEN):
    """A few random edits of the kinds libFuzzer makes."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 2:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and data:
            del data[pos:pos + rng.randint(1, 32)]
        elif op == 4 and data:
            start = rng.randrange(len(data))
            data[pos:pos] = data[start:start + rng.randint(1, 64)]
        elif op == 5 and seeds:
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            data[pos:] = other[start:]
        elif op == 6 and tokens:
            data[pos:pos] = rng.choice(tokens)
        elif op == 7 and tokens and data:
            token = rng.choice(tokens)
            data[pos:pos + len(token)] = token
    return bytes(data[:max_len])


class Result:
    def __init__(self, target, engine, inputs, seconds, failures, coverage=None,
                 features=None, corpus=None, status=0):
        self.target = target
        self.engine = engine
        self.inputs = inputs
        self.seconds = seconds
        self.failures = failures  # list of signatures
        self.coverage = coverage
        self.features = features
        self.corpus = corpus
        self.status = status
        self.output_tail = ""  # the engine's last lines, shown when it failed

    @property
    def ok(self):
        return not self.failures and self.status == 0

    def summary(self):
        rate = self.inputs / self.seconds if self.seconds else 0.0
        parts = ["%s (%s): %d inputs in %.1f s (%.0f/s)" % (
            self.target, self.engine, self.inputs, self.seconds, rate)]
        if self.coverage is not None:
            parts.append("coverage %s edges, %s features, corpus %s" % (
                self.coverage, self.features, self.corpus))
        else:
            parts.append("no coverage feedback")
        parts.append("failures: %d" % len(self.failures))
        if self.status:
            parts.append("engine exit status %d" % self.status)
        text = "; ".join(parts)
        for sig in self.failures:
            text += "\n  failure: " + sig
        if self.status and self.output_tail:
            text += "\n  engine output ends with:\n" + self.output_tail
        return text


def run_random(target, runs=None, seconds=None, seed=0, crash_dir=None, out=sys.stderr):
    """Seeded mutation of the seed corpus, in process, without coverage.

    The fallback when atheris is not installed; deterministic for a seed.
    """
    rng = random.Random(seed)
    seeds = seed_inputs(target)
    tokens = dictionary_tokens(target)
    recorder = Recorder(target, crash_dir, out)
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    for data in seeds:
        recorder(data)
    while (runs is None or recorder.inputs < runs) and (deadline is None or time.monotonic() < deadline):
        recorder(mutate(rng.choice(seeds), rng, seeds, tokens))
    return Result(target, "random seed %d" % seed, recorder.inputs, time.monotonic() - start,
                  list(recorder.failures))


_STATS_RE = re.compile(rb"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_FINAL_RE = re.compile(rb"^stat::number_of_executed_units: (\d+)")
_FAILURE_RE = re.compile(rb"^=== FUZZ FAILURE \d+: (.*)$")


def run_atheris(target, seconds=DEFAULT_SECONDS, libfuzzer_args=(), workdir=None,
                quiet=False, out=sys.stderr):
    """Fuzz target in a libFuzzer child process; return its Result."""
    if workdir is None:
        workdir = os.path.join(tempfile.gettempdir(), "msrp-fuzz", target)
    workdir = os.path.abspath(workdir)
    corpus = os.path.join(workdir, "corpus")
    crashes = os.path.join(workdir, "crashes")
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    args = list(libfuzzer_args)
    if seconds is not None and not any(a.startswith("-max_total_time=") for a in args):
        args.append("-max_total_time=%d" % seconds)
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=%d" % DEFAULT_MAX_LEN)
    if not any(a.startswith("-timeout=") for a in args):
        args.append("-timeout=10")  # a hang of 10 s on one input is a failure
    dictionary = os.path.join(SEEDS, target + ".dict")
    if os.path.exists(dictionary) and not any(a.startswith("-dict=") for a in args):
        args.append("-dict=" + dictionary)
    args += ["-print_final_stats=1", "-artifact_prefix=" + crashes + os.sep,
             corpus, os.path.join(SEEDS, target)]
    command = [sys.executable, os.path.abspath(__file__), "--child", target,
               "--crash-dir", crashes] + args
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                filter(None, [ROOT, os.environ.get("PYTHONPATH")]))))
    stats = (0, None, None, None)
    executed = None
    failures = []
    tail = collections.deque(maxlen=40)
    for line in proc.stdout:
        text = line.decode("utf-8", "replace")
        tail.append(text)
        if not quiet:
            out.write(text)
            out.flush()
        m = _STATS_RE.match(line)
        if m:
            stats = tuple(int(x) for x in m.groups())
        m = _FINAL_RE.match(line)
        if m:
            executed = int(m.group(1))
        m = _FAILURE_RE.match(line.rstrip(b"\r\n"))
        if m:
            failures.append(m.group(1).decode("utf-8", "replace"))
    status = proc.wait()
    elapsed = time.monotonic() - start
    inputs = executed if executed is not None else stats[0]
    result = Result(target, "atheris", inputs, elapsed, failures, *stats[1:], status=status)
    result.output_tail = "".join(tail)
    return result


def _child(target, crash_dir, libfuzzer_args):
    """The libFuzzer process: instrument the core, then fuzz until done."""
    import atheris

    # Not the "RegEx" hook: its pattern proxy lacks match(string, pos,
    # endpos), which the parser uses.
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["msrp_twisted"]):
        load_core()
    recorder = Recorder(target, crash_dir, sys.stdout)
    atheris.Setup([sys.argv[0]] + libfuzzer_args, recorder)
    sys.stdout.flush()
    atheris.Fuzz()


def atheris_available():
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        target, crash_dir = argv[1], argv[3]
        _child(target, crash_dir, argv[4:])
        return 0
    # Single-dash flags (-runs=N, -max_len=N, ...) go to libFuzzer.
    libfuzzer_args = [a for a in argv if a.startswith("-") and not a.startswith("--")]
    ours = [a for a in argv if a not in libfuzzer_args]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=sorted(TARGETS) + ["all"])
    ap.add_argument("--seconds", type=float, default=None,
                    help="time limit per target (default %d, or none when -runs is given)" % DEFAULT_SECONDS)
    ap.add_argument("--engine", choices=("atheris", "random"), default=None,
                    help="default: atheris when installed, else random")
    ap.add_argument("--seed", type=int, default=0, help="random engine seed")
    ap.add_argument("--workdir", default=None,
                    help="corpus and crashes (default: TMPDIR/msrp-fuzz/TARGET)")
    ap.add_argument("--quiet", action="store_true", help="only the summary")
    opts = ap.parse_args(ours)
    runs = next((int(a.split("=", 1)[1]) for a in libfuzzer_args if a.startswith("-runs=")), None)
    seconds = opts.seconds
    if seconds is None and runs is None:
        seconds = DEFAULT_SECONDS
    engine = opts.engine
    if engine is None:
        engine = "atheris" if atheris_available() else "random"
        if engine == "random":
            print("atheris is not installed: seeded random mutation, no coverage feedback",
                  file=sys.stderr)
    targets = sorted(TARGETS) if opts.target == "all" else [opts.target]
    results = []
    for target in targets:
        workdir = opts.workdir and os.path.join(opts.workdir, target)
        if engine == "atheris":
            result = run_atheris(target, seconds, libfuzzer_args, workdir, opts.quiet)
        else:
            crash_dir = os.path.join(workdir or os.path.join(tempfile.gettempdir(), "msrp-fuzz", target),
                                     "crashes")
            result = run_random(target, runs, seconds, opts.seed, crash_dir)
        results.append(result)
        print(result.summary(), flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

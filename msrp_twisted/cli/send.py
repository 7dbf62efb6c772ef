"""msrp-send: send a text, a file or standard input to an MSRP URI.

Exit code 0 only on confirmed delivery: the far end's success REPORT (asked
for by default) or, with --no-report, the 200 of every chunk.
"""

import os
import pathlib
import stat
import sys
import tempfile

from twisted.internet import defer, threads
from twisted.python import usage

from ..core.errors import URIError
from ..core.uri import parse_path
from .common import EXIT_OK, CommonOptions, parse_args, run_tool

PROG = "msrp-send"


class Options(CommonOptions):
    synopsis = "URI (--text TEXT | --file PATH | -) [options]"
    longdesc = ("Send one message to the MSRP path URI (several URIs separated by spaces for a path). "
                "With '-', standard input is read to its end first; from a pipe it is spooled "
                "(1 MiB in memory, the rest in a temporary file).")
    optParameters = CommonOptions.optParameters + [
        ["text", "t", None, "text to send (text/plain)"],
        ["file", "f", None, "file to send (streamed from disk)"],
        ["content-type", None, None, "content type [default: text/plain for text, else application/octet-stream]"],
        ["chunk-size", None, "2048", "bytes per chunk"],
    ]
    optFlags = CommonOptions.optFlags + [
        ["no-report", None, "do not ask for a success REPORT; 200s confirm delivery"],
        ["quiet", "q", "no progress bar (there is none unless stderr is a terminal)"],
    ]

    def parseArgs(self, uri, source=None):
        self["uri"] = uri
        self["stdin"] = source == "-"
        if source not in (None, "-"):
            raise usage.UsageError("unexpected argument %r (only '-' for standard input)" % source)

    def postOptions(self):
        CommonOptions.postOptions(self)
        chosen = [bool(self["text"] is not None), bool(self["file"]), self["stdin"]]
        if sum(chosen) != 1:
            raise usage.UsageError("give exactly one of --text, --file or '-'")
        try:
            self["path"] = list(parse_path(self["uri"]))
        except URIError as e:
            raise usage.UsageError("bad URI %r: %s" % (self["uri"], e))
        try:
            self["chunk-size"] = int(self["chunk-size"])
            if self["chunk-size"] < 1:
                raise ValueError
        except ValueError:
            raise usage.UsageError("--chunk-size: %r is not a positive whole number" % self["chunk-size"])
        if self["file"] and not os.path.isfile(self["file"]):
            raise usage.UsageError("--file: %s is not a readable file" % self["file"])


# Standard input from a pipe or a terminal is spooled before sending:
# in memory up to this size, on disk beyond it.
STDIN_SPOOL_MEMORY = 1 << 20


def _spool(source, limit=STDIN_SPOOL_MEMORY):
    spool = tempfile.SpooledTemporaryFile(max_size=limit, prefix="msrp-send-")
    try:
        while True:
            data = source.read(1 << 16)
            if not data:
                break
            spool.write(data)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, size


def read_stdin(reactor, stdin):
    """Fires with (binary file, size) for what standard input holds.

    A regular file (``< file``) is sent as it is. A pipe or a terminal is
    spooled first, in a thread: memory stays bounded whatever is piped in,
    the reactor never waits on a slow writer, and every chunk's Byte-Range
    carries the total instead of '*'.
    """
    try:
        info = os.fstat(stdin.fileno())
    except (OSError, AttributeError, ValueError):
        info = None
    if info is not None and stat.S_ISREG(info.st_mode):
        return defer.succeed((stdin, info.st_size - stdin.tell()))
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), _spool, stdin)


class Progress:
    """A one-line bar redrawn as chunks are confirmed (by 200 or REPORT)."""

    def __init__(self, out, total, quiet):
        self.out = out
        self.total = total
        self.quiet = quiet
        self.last = -1

    def __call__(self, done, total):
        if self.quiet:
            return
        total = total or self.total
        if not total:
            return
        pct = int(done * 100 / total)
        if pct == self.last:
            return
        self.last = pct
        bar = "#" * (pct // 4)
        self.out.write("\r[%-25s] %3d%% %d/%d bytes" % (bar, pct, done, total))
        if done >= total:
            self.out.write("\n")
        self.out.flush()


@defer.inlineCallbacks
def run(reactor, options, out=sys.stdout, err=sys.stderr):
    from ..endpoint import Endpoint
    from ..protocol import TransportSettings

    stdin = None
    if options["stdin"]:
        # Read before connecting: a session is not held open while a
        # pipeline upstream is still working.
        stdin, stdin_size = yield read_stdin(reactor, sys.stdin.buffer)
    ep = Endpoint(reactor, tls=options.tls_settings(), transaction_timeout=options["timeout"],
                  settings=TransportSettings(tls_handshake_timeout=int(options["timeout"] * 1000)))
    try:
        session = yield ep.create_session(relays=options["relays"])
        yield session.connect(options["path"])
        if options["text"] is not None:
            content, ctype, total = options["text"].encode("utf-8"), "text/plain", None
        elif options["file"]:
            # A Path, so that --content-type text/... never sends the name as the text.
            content, total = pathlib.Path(options["file"]), os.path.getsize(options["file"])
            ctype = "application/octet-stream"
        else:
            content, ctype, total = stdin, "application/octet-stream", stdin_size
        ctype = options["content-type"] or ctype
        headers = []
        if options["file"]:
            name = os.path.basename(options["file"]).replace('"', "")
            headers.append(("Content-Disposition", 'attachment; filename="%s"' % name))
        # A bar only for a file, and only on a terminal: in a log it is noise.
        on_terminal = getattr(err, "isatty", lambda: False)()
        progress = Progress(err, total, options["quiet"] or not options["file"] or not on_terminal)
        msg = session.send_message(content, ctype, success_report=not options["no-report"],
                                   chunk_size=options["chunk-size"], headers=headers, progress=progress)
        result = yield msg.result
        if msg.report is not None:
            status = msg.report.status
            how = ("success REPORT %03d %s" % (status.code, status.comment or "")).rstrip()
        else:
            how = "200 for every chunk"
        size = getattr(result, "size", None)
        out.write("delivered: message %s (%s bytes), confirmed by %s\n" % (msg.message_id, size, how))
        return EXIT_OK
    finally:
        if stdin is not None and stdin is not sys.stdin.buffer:
            stdin.close()
        yield ep.close()


def main(argv=None):
    options = parse_args(Options(), sys.argv[1:] if argv is None else argv, PROG)
    run_tool(PROG, options, run)


if __name__ == "__main__":
    main()

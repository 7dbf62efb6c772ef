"""msrp-listen: receive MSRP messages and files, print them, save them.

The first line printed is this session's MSRP path, to paste to a sender.
Text messages are printed; other content (or anything with a file name in
Content-Disposition) is saved in --save-dir with its sha256 printed.
"""

import os
import pathlib
import re
import sys

from twisted.internet import defer
from twisted.python import usage

from ..connections import ListenerSpecError, parse_listener
from ..core.ids import is_valid_session_id
from .common import EXIT_OK, CommonOptions, explain, parse_args, run_tool

PROG = "msrp-listen"
_FILENAME_RE = re.compile(r'filename="?([^";]+)"?', re.I)


class Options(CommonOptions):
    synopsis = "--listen msrp:127.0.0.1:PORT [options]"
    optParameters = CommonOptions.optParameters + [
        ["listen", "l", None, "where peers connect: msrp:IP[:PORT] or msrps:IP[:PORT]"],
        ["session-id", None, None, "session-id of our URI [default: random, 120 bits]"],
        ["save-dir", "d", ".", "directory for received files"],
        ["count", None, None, "exit after this many messages"],
    ]
    optFlags = CommonOptions.optFlags + [
        ["echo", None, "send every message back to its sender"],
    ]

    def postOptions(self):
        CommonOptions.postOptions(self)
        if not self["listen"] and not self["relays"]:
            raise usage.UsageError("give --listen (direct) and/or --relay (through a relay)")
        if self["listen"]:
            try:
                parse_listener(self["listen"])
            except ListenerSpecError as e:
                raise usage.UsageError("--listen: %s" % e)
        if self["session-id"] is not None and not is_valid_session_id(self["session-id"]):
            raise usage.UsageError("--session-id: %r has characters not allowed in an MSRP session-id"
                                   % self["session-id"])
        if not os.path.isdir(self["save-dir"]):
            raise usage.UsageError("--save-dir: %s is not a directory" % self["save-dir"])
        if self["count"] is not None:
            try:
                self["count"] = int(self["count"])
                if self["count"] < 1:
                    raise ValueError
            except ValueError:
                raise usage.UsageError("--count: %r is not a positive whole number" % self["count"])


def _save(message, directory):
    name = None
    disposition = message.headers.get("Content-Disposition") if message.headers else None
    if disposition:
        m = _FILENAME_RE.search(disposition)
        if m:
            name = os.path.basename(m.group(1).strip()) or None
    if not name or name.startswith("."):
        name = message.message_id
    target = os.path.join(directory, name)
    base, n = target, 1
    while os.path.exists(target):
        target = "%s.%d" % (base, n)
        n += 1
    if message.path is not None:
        import shutil

        shutil.move(message.path, target)
        message.path = None
    else:
        with open(target, "wb") as f:
            f.write(message.data)
    return target


@defer.inlineCallbacks
def run(reactor, options, out=sys.stdout, err=sys.stderr):
    from ..endpoint import Endpoint

    ep = Endpoint(reactor, tls=options.tls_settings(), transaction_timeout=options["timeout"])
    done = defer.Deferred()
    received = [0]
    try:
        if options["listen"]:
            yield ep.listen(options["listen"])
        session = yield ep.create_session(options["session-id"], relays=options["relays"],
                                          spool_dir=options["save-dir"])
        out.write("path: %s\n" % session.path_text)
        out.flush()

        def path_changed(session):
            # A relay handed out a new session when the AUTH was refreshed
            # (Kamailio does every time): senders need the new path.
            out.write("path: %s\n" % session.path_text)
            out.flush()

        session.on_path_changed = path_changed

        def on_message(message):
            ctype = (message.content_type or "").lower()
            has_name = bool(message.headers and _FILENAME_RE.search(message.headers.get("Content-Disposition") or ""))
            if ctype.startswith("text/") and not has_name and message.data is not None:
                text = message.data.decode("utf-8", "replace")
                out.write("message %s (%s, %d bytes): %s\n" % (message.message_id, ctype, message.size, text))
                content = message.data
            else:
                target = _save(message, options["save-dir"])
                out.write("file %s (%s, %d bytes) sha256 %s\n" % (target, ctype, message.size, message.sha256))
                # Its spool file was moved there; a Path is never taken for text.
                content = pathlib.Path(target)
            out.flush()
            if options["echo"]:
                # Back along its From-Path: every sender shares this session.
                echo = session.send_message(content, message.content_type or "application/octet-stream",
                                            to_path=message.request.from_path)
                echo.result.addErrback(lambda f: err.write("%s: echo failed: %s\n" % (PROG, explain(f)[0])))
            received[0] += 1
            if options["count"] and received[0] >= options["count"] and not done.called:
                reactor.callLater(0, done.callback, None)

        session.on_message = on_message
        yield done
        return EXIT_OK
    finally:
        yield ep.close()


def main(argv=None):
    options = parse_args(Options(), sys.argv[1:] if argv is None else argv, PROG)
    run_tool(PROG, options, run)


if __name__ == "__main__":
    main()

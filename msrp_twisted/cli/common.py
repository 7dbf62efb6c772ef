"""What the command-line tools share: TLS options, relay options, error
reporting with exit codes and no tracebacks."""

import os
import sys

from twisted.python import usage

from ..core.errors import URIError
from ..core.uri import parse_uri

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class Fatal(Exception):
    """Print the message and exit with code."""

    def __init__(self, message, code=EXIT_FAILED):
        super().__init__(message)
        self.code = code


class CommonOptions(usage.Options):
    optParameters = [
        ["user", "u", None, "user name for the relay's Digest AUTH"],
        ["password", "p", None, "password for the relay (default: $MSRP_PASSWORD)"],
        ["tls-ca", None, None, "CA bundle (PEM) to verify msrps peers and relays"],
        ["tls-cert", None, None, "certificate (PEM) for msrps listeners / client authentication"],
        ["tls-key", None, None, "private key (PEM) for --tls-cert"],
        ["timeout", None, "30", "seconds to wait for each response"],
    ]
    optFlags = [
        ["tls-insecure", None, "do not verify msrps certificates (labs only)"],
    ]

    def __init__(self):
        super().__init__()
        self["relay"] = []

    def opt_relay(self, uri):
        """relay URI to authenticate to (msrp[s]://host:port); repeat for a chain, nearest first"""
        self["relay"].append(uri)

    def postOptions(self):
        try:
            self["timeout"] = float(self["timeout"])
            if self["timeout"] <= 0:
                raise ValueError
        except ValueError:
            raise usage.UsageError("--timeout: %r is not a positive number of seconds" % self["timeout"])
        self["relays"] = []
        if self["relay"]:
            if self["user"] is None:
                raise usage.UsageError("--relay needs --user (and --password or $MSRP_PASSWORD)")
            password = self["password"] if self["password"] is not None else os.environ.get("MSRP_PASSWORD")
            if password is None:
                raise usage.UsageError("--relay needs --password or $MSRP_PASSWORD")
            for text in self["relay"]:
                try:
                    uri = parse_uri(text, require_transport=False)
                except URIError as e:
                    raise usage.UsageError("--relay: %s" % e)
                if uri.session_id:
                    raise usage.UsageError("--relay: %s names a session; give the relay's own URI "
                                           "(msrp[s]://host:port)" % text)
                self["relays"].append((uri, self["user"], password))
        for name in ("tls-ca", "tls-cert", "tls-key"):
            if self[name] and not os.path.exists(self[name]):
                raise usage.UsageError("--%s: %s does not exist" % (name, self[name]))

    def tls_settings(self):
        if not (self["tls-ca"] or self["tls-cert"] or self["tls-insecure"]):
            return None
        from ..tls import TLSSettings

        try:
            return TLSSettings(cert_file=self["tls-cert"], key_file=self["tls-key"], ca_file=self["tls-ca"],
                               verify_server=not self["tls-insecure"])
        except ValueError as e:
            raise Fatal("TLS: %s" % e, EXIT_USAGE)


def parse_args(options, argv, prog):
    """Parse like GNU tools: options may follow the positional arguments
    (`msrp-send URI --text hi`), which Twisted's getopt-based parser refuses."""
    import getopt

    try:
        original, getopt.getopt = getopt.getopt, getopt.gnu_getopt
        try:
            options.parseOptions(argv)
        finally:
            getopt.getopt = original
    except usage.UsageError as e:
        sys.stderr.write("%s: %s\n%s: try --help\n" % (prog, e, prog))
        raise SystemExit(EXIT_USAGE)
    return options


def explain(failure):
    """One line for any failure a tool can meet: no tracebacks for users."""
    from ..chunking import MessageSendError
    from ..connections import SendError
    from ..endpoint import EndpointError
    from ..transactions import TransactionError

    e = failure.value
    if isinstance(e, Fatal):
        return str(e), e.code
    if isinstance(e, (EndpointError, SendError, TransactionError, MessageSendError, URIError)):
        return str(e), EXIT_FAILED
    from OpenSSL import SSL

    if isinstance(e, SSL.Error):
        return "TLS failed: %s" % (e,), EXIT_FAILED
    return "%s: %s" % (type(e).__name__, e), EXIT_FAILED


def run_tool(prog, options, run):
    """Run run(reactor, options) -> Deferred[exit code] under task.react,
    turning any failure into one line on stderr and its exit code."""
    from twisted.internet import task

    def go(reactor):
        def failed(f):
            text, code = explain(f)
            sys.stderr.write("%s: %s\n" % (prog, text))
            return code

        def exit_with(code):
            if code:
                raise SystemExit(code)

        return run(reactor, options).addErrback(failed).addCallback(exit_with)

    task.react(go)

"""msrp-mi: run one management command against a running MSRP service.

Exit codes: 0 success, 1 the service was unreachable or refused the command,
2 the command line was wrong.  Errors are one line on stderr, never a
traceback; results are JSON on stdout.
"""

import json
import os
import sys

from twisted.internet import defer, error
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.protocols import amp
from twisted.python import usage

from msrp_twisted import mi

# Where the service's MI listener is when not configured otherwise.
DEFAULT_ENDPOINT = "tcp:127.0.0.1:2856"

DEFAULT_TIMEOUT = 10.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


async def _msrp_trace(protocol, mode=None):
    arguments = {} if mode is None else {"trace_mode": mode}
    return await protocol.callRemote(mi.MSRPTrace, **arguments)


async def _list_connections(protocol):
    connections, total = await mi.call_paged(protocol, mi.ListConnections, "connections")
    return {"connections": connections, "total": total}


async def _list_sessions(protocol):
    sessions, total = await mi.call_paged(protocol, mi.ListSessions, "sessions")
    return {"sessions": sessions, "total": total}


async def _statistics(protocol):
    response = await protocol.callRemote(mi.Statistics)
    return {pair["name"]: pair["value"] for pair in response["counters"]}


async def _end_session(protocol, session_id):
    return await protocol.callRemote(mi.EndSession, session_id=session_id)


async def _reload_users(protocol):
    return await protocol.callRemote(mi.ReloadUsers)


async def _reload_tls(protocol):
    return await protocol.callRemote(mi.ReloadTLS)


# name: (runner, required argument names, optional argument names, help)
COMMANDS = {
    "msrp_trace": (_msrp_trace, (), ("on|off",), "show tracing, or switch it on/off"),
    "list_connections": (_list_connections, (), (), "list open MSRP connections"),
    "list_sessions": (_list_sessions, (), (), "list relay sessions"),
    "statistics": (_statistics, (), (), "show the service counters"),
    "end_session": (_end_session, ("SESSION_ID",), (), "end one relay session"),
    "reload_users": (_reload_users, (), (), "reload relay user credentials"),
    "reload_tls": (_reload_tls, (), (), "reload TLS certificate and key"),
}


def _known_commands():
    return ", ".join(sorted(COMMANDS))


def _command_synopsis(name):
    _, required, optional, _ = COMMANDS[name]
    return " ".join([name, *required, *(f"[{arg}]" for arg in optional)])


class Options(usage.Options):
    synopsis = "msrp-mi [--connect ENDPOINT] [--secret-file PATH] [--timeout SECONDS] COMMAND [ARGS]"

    longdesc = ""  # the command table goes after the options, unwrapped

    optParameters = [
        [
            "connect", "c", DEFAULT_ENDPOINT,
            "Twisted client endpoint of the MI service, e.g. tcp:HOST:PORT or "
            "unix:/path/to/socket (the service listens on tcp:127.0.0.1:2856 by "
            "default).",
        ],
        [
            "secret-file", "s", None,
            "File holding the MI secret, when the service has one (its mi_secret_file); "
            "default: $MSRP_MI_SECRET_FILE.",
        ],
        ["timeout", "t", DEFAULT_TIMEOUT, "Seconds to wait for the whole command.", float],
    ]

    def getUsage(self, width=None):
        table = "\n".join(
            f"  {_command_synopsis(name):<26}{COMMANDS[name][3]}" for name in sorted(COMMANDS)
        )
        return f"{super().getUsage(width)}\nCommands:\n{table}\n"

    def opt_version(self):
        """Print the version and exit."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("msrp_twisted")
        except PackageNotFoundError:
            installed = "(not installed)"
        print(f"msrp-mi (msrp_twisted) {installed}")
        sys.exit(0)

    def parseArgs(self, *arguments):
        if not arguments:
            raise usage.UsageError(f"no command given (known commands: {_known_commands()})")
        name, *values = arguments
        if name not in COMMANDS:
            raise usage.UsageError(
                f"unknown command {name!r} (known commands: {_known_commands()})"
            )
        _, required, optional, _ = COMMANDS[name]
        if not len(required) <= len(values) <= len(required) + len(optional):
            raise usage.UsageError(f"wrong arguments; usage: {_command_synopsis(name)}")
        self["command"] = name
        self["arguments"] = values

    def postOptions(self):
        if not self["timeout"] > 0:
            raise usage.UsageError(f"--timeout must be more than 0, not {self['timeout']}")
        path = self["secret-file"] or os.environ.get("MSRP_MI_SECRET_FILE") or None
        self["secret"] = None
        if path:
            try:
                self["secret"] = mi.read_secret(path)
            except ValueError as e:
                raise usage.UsageError(f"--secret-file: {e}")


class _ClientProtocol(amp.AMP):
    """AMP that can tell when its connection has really closed."""

    def __init__(self):
        super().__init__()
        self.closed = defer.Deferred()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.closed.callback(None)


class _Failed(Exception):
    """A one-line reason for exit code 1."""


def _describe(exception):
    text = str(exception).strip()
    return text or type(exception).__name__


async def _converse(endpoint, target, name, arguments, secret=None):
    try:
        protocol = await connectProtocol(endpoint, _ClientProtocol())
    except defer.CancelledError:
        raise
    except Exception as e:
        raise _Failed(f"cannot reach the MI service at {target}: {_describe(e)}")
    try:
        if secret is not None:
            try:
                await mi.authenticate(protocol, secret)
            except mi.AuthenticationFailed as e:
                raise _Failed(f"the MI service at {target} refused the secret: {e.message}")
        runner = COMMANDS[name][0]
        return await runner(protocol, *arguments)
    except mi.NotAuthenticated:
        raise _Failed(f"{name} refused: the MI service at {target} needs its secret "
                      "(--secret-file or $MSRP_MI_SECRET_FILE)")
    except mi.ManagementError as e:
        raise _Failed(f"{name} failed: {e.message}")
    except amp.RemoteAmpError as e:
        description = e.description
        if isinstance(description, bytes):
            description = description.decode("utf-8", "replace")
        raise _Failed(f"{name} failed: {description}")
    except (error.ConnectionLost, error.ConnectionDone) as e:
        raise _Failed(f"connection to {target} lost before {name} was answered: {_describe(e)}")
    finally:
        if protocol.transport is not None:
            protocol.transport.loseConnection()
            await protocol.closed


async def _run(reactor, config, out, err, clock):
    target = config["connect"]
    try:
        endpoint = clientFromString(reactor, target)
    except Exception as e:
        err.write(
            f"msrp-mi: error: bad --connect endpoint {target!r} ({_describe(e)}); "
            "expected tcp:HOST:PORT or unix:PATH\n"
        )
        return EXIT_USAGE
    timeout = config["timeout"]
    work = defer.Deferred.fromCoroutine(
        _converse(endpoint, target, config["command"], config["arguments"], config.get("secret"))
    )
    work.addTimeout(timeout, clock)
    try:
        result = await work
    except defer.TimeoutError:
        err.write(f"msrp-mi: no answer from the MI service at {target} within {timeout:g}s\n")
        return EXIT_FAILED
    except _Failed as e:
        err.write(f"msrp-mi: {e}\n")
        return EXIT_FAILED
    except Exception as e:
        err.write(f"msrp-mi: unexpected failure talking to {target}: {_describe(e)}\n")
        return EXIT_FAILED
    out.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return EXIT_OK


def run(reactor, config, out=None, err=None, clock=None):
    """Run the parsed command; a Deferred firing with the exit code, never failing.

    C{config} is a parsed L{Options}; C{clock} (default: C{reactor}) times
    the whole exchange out after C{config["timeout"]} seconds.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    clock = reactor if clock is None else clock
    return defer.Deferred.fromCoroutine(_run(reactor, config, out, err, clock))


def main(argv=None):
    """The msrp-mi console script; returns the process exit code."""
    if argv is None:
        argv = sys.argv[1:]
    config = Options()
    try:
        config.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"msrp-mi: error: {e}\n")
        sys.stderr.write("run 'msrp-mi --help' for usage\n")
        return EXIT_USAGE
    except SystemExit as e:  # --help / --version
        return e.code or 0

    from twisted.internet.task import react

    codes = []

    def start(reactor):
        return run(reactor, config).addCallback(codes.append)

    try:
        react(start)
    except SystemExit:
        pass
    return codes[0] if codes else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

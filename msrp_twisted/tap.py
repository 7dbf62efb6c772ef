"""`twistd msrp`: command-line options and service construction.

Options come from config.OPTIONS, so `twistd -n msrp --help`, the TOML file
(--config, snake_case keys) and msrp.tac share names, defaults and checks.
Values given on the command line win over the file.
"""

import sys

from twisted.python import usage

from .config import OPTIONS, ConfigError, MSRPConfig, load_toml

_REPEATABLE = ("listen", "relay_uri")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run an RFC 4976 MSRP relay. With no options it listens on "
                "msrp:127.0.0.1:2855 and serves management (AMP) on tcp:127.0.0.1:2856.")

    optParameters = [["config", "c", None, "TOML file with the same settings in snake_case"]] + [
        [name.replace("_", "-"), None, None, "%s [default: %s]" % (help_text, default)]
        for name, (default, _, help_text) in OPTIONS.items() if name not in _REPEATABLE
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []
        self["relay-uri"] = []

    def opt_listen(self, value):
        """listener msrp:IP[:PORT] or msrps:IP[:PORT] (IPv6 in brackets); repeatable
        [default: msrp:127.0.0.1:2855]"""
        self["listen"].append(value)

    def opt_relay_uri(self, value):
        """the relay's own URI (as OpenSIPS' my_uri); repeatable [default: one per listener]"""
        self["relay-uri"].append(value)

    def postOptions(self):
        values = {}
        if self["config"]:
            try:
                values.update(load_toml(self["config"]))
            except ConfigError as e:
                raise usage.UsageError(str(e))
        for name in OPTIONS:
            opt = name.replace("_", "-")
            value = self.get(opt)
            if value in (None, []):
                continue
            values[name] = value
        try:
            self.config = MSRPConfig.from_mapping(values, self["config"] or "command line")
        except ConfigError as e:
            raise usage.UsageError(str(e))


def makeService(options):
    """twistd's entry point: the relay (or a pool of workers) for options."""
    from .allocator import tune_malloc

    tune_malloc()  # this process is ours: keep relay buffers' pages (see allocator)
    return make_service(options.config)


def make_service(config):
    """The service for config: one relay process, or with workers > 1 the
    parent of that many (workers.py, docs/scaling.md)."""
    from .service import MSRPService

    if config.workers > 1:
        from .workers import WorkerPool

        return WorkerPool(config)
    return MSRPService(config)


def config_from_environment(environ=None):
    """The configuration msrp.tac uses: the TOML file named by MSRP_CONFIG."""
    import os

    environ = os.environ if environ is None else environ
    path = environ.get("MSRP_CONFIG")
    if not path:
        return MSRPConfig()
    try:
        return MSRPConfig.from_mapping(load_toml(path), path)
    except ConfigError as e:
        sys.stderr.write("msrp.tac: %s\n" % e)
        raise SystemExit(2)

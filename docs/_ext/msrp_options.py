"""The ``msrp-options`` directive: the settings table, made from the code.

The table is built from ``msrp_twisted.config.OPTIONS`` (default, checker,
help) and the ``MSRPConfig`` field types when the docs are built, so the
admin guide lists every setting ``twistd msrp --help`` knows, with the same
defaults, however the options change.

Usage (MyST)::

    ```{msrp-options}
    :exclude: send_timeout max_msg_chunks
    ```

``:only:`` lists the settings to show instead.
"""

from dataclasses import fields

from docutils import nodes
from docutils.parsers.rst import Directive, directives

_REPEATABLE = ("listen", "relay_uri")

# Example values for the example column; a setting missing here shows its
# default (or VALUE when it has none), so new options never break the build.
EXAMPLES = {
    "listen": ["msrp:192.0.2.10:2855", "msrps:192.0.2.10:2856"],
    "tls_cert": "/etc/msrp/relay.pem",
    "tls_key": "/etc/msrp/relay.key",
    "tls_ca": "/etc/msrp/ca.pem",
    "tls_verify_client": 1,
    "tls_insecure": 1,
    "tls_ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20",
    "send_timeout": 250,
    "max_msg_chunks": 8,
    "tls_handshake_timeout": 500,
    "cert_check_on_conn_reusage": 1,
    "max_chunk_size": 1048576,
    "msg_read_timeout": 10.0,
    "idle_timeout": 300.0,
    "transaction_timeout": 30.0,
    "trace_destination": "udp:192.0.2.20:9060",
    "trace_on": 1,
    "trace_filter": "mytrace:only_external",
    "trace_messages": 1,
    "trace_max_body": 64,
    "hep_capture_id": 2001,
    "hep_auth_key": "myHep",
    "mi": "unix:/run/msrp/mi.sock",
    "relay_uri": ["msrps://relay.example.net:2856;tcp"],
    "auth_realm": "example.net",
    "users": "/etc/msrp/users.htdigest",
    "auth_expires": 900,
    "auth_min_expires": 60,
    "auth_max_expires": 7200,
    "nonce_expire": 60,
    "auth_max_failures": 5,
    "auth_failure_window": 120.0,
    "auth_block_time": 600.0,
    "max_connections_per_ip": 50,
}


def _toml_value(value):
    if isinstance(value, list):
        return "[%s]" % ", ".join(_toml_value(v) for v in value)
    if isinstance(value, str):
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    return str(value)


def _cli_example(name, value):
    flag = "--" + name.replace("_", "-")
    values = value if isinstance(value, list) else [value]
    return " ".join("%s=%s" % (flag, v) for v in values)


def _type_name(name, checker, annotation):
    from msrp_twisted import config

    if checker is config._flag:
        return "0/1"
    if annotation is list or name in _REPEATABLE:
        return "string, repeatable (TOML: list)"
    return {int: "integer", float: "number", str: "string"}.get(annotation, str(annotation))


def _default_text(value):
    if value is None:
        return "(not set)"
    if isinstance(value, list):
        return ", ".join(value) if value else "(one per listener)"
    return str(value)


def _literal(text):
    return nodes.literal(text, text)


def _row(*cells):
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        para = nodes.paragraph()
        for item in content if isinstance(content, list) else [content]:
            para += item
        entry += para
        row += entry
    return row


class OptionsTable(Directive):
    has_content = False
    option_spec = {"only": directives.unchanged, "exclude": directives.unchanged}

    def run(self):
        from msrp_twisted.config import OPTIONS, MSRPConfig

        annotations = {f.name: f.type for f in fields(MSRPConfig)}
        only = self.options.get("only", "").split()
        exclude = set(self.options.get("exclude", "").split())
        names = only or [name for name in OPTIONS if name not in exclude]
        unknown = [name for name in names if name not in OPTIONS]
        if unknown:
            raise self.error("msrp-options: unknown setting(s) %s" % ", ".join(unknown))

        table = nodes.table(classes=["msrp-options"])
        group = nodes.tgroup(cols=5)
        table += group
        for width in (22, 12, 14, 30, 30):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row(nodes.Text("Setting (TOML / command line)"), nodes.Text("Type"),
                     nodes.Text("Default"), nodes.Text("Meaning"),
                     nodes.Text("Example (TOML; command line)"))
        group += head
        body = nodes.tbody()
        for name in names:
            default, checker, help_text = OPTIONS[name]
            body += _row(
                [_literal(name), nodes.Text(" "), _literal("--" + name.replace("_", "-"))],
                nodes.Text(_type_name(name, checker, annotations.get(name))),
                _literal(_default_text(default)) if default not in (None, []) else
                nodes.Text(_default_text(default)),
                nodes.Text(help_text),
                self._example(name, default),
            )
        group += body
        return [table]


    @staticmethod
    def _example(name, default):
        value = EXAMPLES.get(name, default)
        if value in (None, []):
            value = "VALUE"
        return [_literal("%s = %s" % (name, _toml_value(value))), nodes.Text("; "),
                _literal(_cli_example(name, value))]


def setup(app):
    app.add_directive("msrp-options", OptionsTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

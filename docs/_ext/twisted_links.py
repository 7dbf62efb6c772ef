"""Offline cross-references to Twisted, and Twisted-style docstrings.

intersphinx would need Twisted's objects.inv, which an offline build cannot
fetch. Twisted's API docs are made by pydoctor, whose URLs follow from the
dotted name: a module or a class has a page of its own, anything else is an
anchor on the page of the class or module that holds it. So a reference to
``twisted.x.y`` is resolved by looking the name up in the installed Twisted
and building that URL. A name that does not exist stays unresolved, and
``nitpicky`` reports it.

Standard library names link to docs.python.org, whose anchors are the
dotted names. Names from the other third-party packages (zope.interface,
constantly, pyOpenSSL, cryptography, service_identity) and private names of
this package are left as plain text.

Docstrings: Twisted's epytext markup (``C{code}``, ``L{name}``, ``I{}``,
``B{}``) is rewritten to reST, and section titles (a line underlined with
``---``) become rubrics, since docutils allows no sections inside an autodoc
body.
"""

import importlib
import inspect
import re
import sys

from docutils import nodes

TWISTED_API = "https://docs.twisted.org/en/stable/api/"
PYTHON_LIBRARY = "https://docs.python.org/3/library/"
PLAIN_TEXT_PACKAGES = ("zope", "constantly", "OpenSSL", "cryptography", "service_identity", "attr")


def _lookup(dotted):
    """(module name, [(attribute, object), ...]) or None if it does not exist."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        chain = []
        for attr in parts[split:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                return None
            chain.append((attr, obj))
        return module_name, chain
    return None


def twisted_url(dotted):
    """The pydoctor URL of a Twisted object, or None if there is no such object."""
    found = _lookup(dotted)
    if found is None:
        return None
    module_name, chain = found
    page, anchor = [module_name], []
    for attr, obj in chain:
        if not anchor and inspect.isclass(obj):
            page.append(attr)
        else:
            anchor.append(attr)
    url = TWISTED_API + ".".join(page) + ".html"
    if anchor:
        url += "#" + ".".join(anchor)
    return url


def python_url(dotted):
    """The docs.python.org URL of a standard library object, or None."""
    top = dotted.partition(".")[0]
    if top not in sys.stdlib_module_names or top == "builtins":
        return None
    found = _lookup(dotted)
    if found is None:
        return None
    module_name, chain = found
    url = PYTHON_LIBRARY + module_name + ".html"
    return url + "#" + dotted if chain else url


def resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    top = target.partition(".")[0]
    if top in PLAIN_TEXT_PACKAGES:
        return contnode
    if top == "msrp_twisted":
        if any(part.startswith("_") and not part.startswith("__") for part in target.split(".")):
            return contnode
        return None
    if top == "twisted":
        url = twisted_url(target)
    else:
        url = python_url(target)
    if url is None:
        return None
    ref = nodes.reference("", "", internal=False, refuri=url, reftitle=target)
    ref.append(contnode)
    return ref


_EPYTEXT = [
    (re.compile(r"C\{([^{}]*)\}"), r"``\1``"),
    (re.compile(r"L\{([^{}]*)\}"), r":py:obj:`\1`"),
    (re.compile(r"I\{([^{}]*)\}"), r"*\1*"),
    (re.compile(r"B\{([^{}]*)\}"), r"**\1**"),
]
_UNDERLINE = re.compile(r"\s*([-=~^\"'`#*+])\1{2,}\s*\Z")
_BULLET = re.compile(r"\s*[-*+] \S")


def _indent(line):
    return len(line) - len(line.lstrip())


def _space_lists(lines):
    """Blank lines around bullet lists written flush against a paragraph,
    which reST requires and plain-text docstrings often omit."""
    out = []
    list_indent = None
    literal_indent = None  # inside a literal block opened by "::"
    for line in lines:
        if literal_indent is not None:
            if not line.strip() or _indent(line) > literal_indent:
                out.append(line)
                continue
            literal_indent = None
        if line.rstrip().endswith("::"):
            literal_indent = _indent(line)
        if not line.strip():
            list_indent = None
        elif _BULLET.match(line):
            previous = out[-1] if out else ""
            if list_indent is None and previous.strip() and _indent(previous) == _indent(line) \
                    and not previous.rstrip().endswith("::"):
                out.append("")
            list_indent = _indent(line)
        elif list_indent is not None and _indent(line) <= list_indent:
            out.append("")
            list_indent = None
        out.append(line)
    return out


def convert_docstring(app, what, name, obj, options, lines):
    if what in ("data", "attribute") and obj is not None and lines:
        # A variable without a doc comment gets its type's docstring
        # (dict's, str's ...), which says nothing about it.
        inherited = type(obj).__doc__
        inherited = inspect.cleandoc(inherited) if isinstance(inherited, str) else ""
        if inherited and "\n".join(lines).strip() == inherited.strip():
            lines[:] = []
            return
    for i, line in enumerate(lines):
        for pattern, replacement in _EPYTEXT:
            line = pattern.sub(replacement, line)
        lines[i] = line
    i = 0
    while i + 1 < len(lines):
        title, under = lines[i], lines[i + 1]
        if title.strip() and _UNDERLINE.match(under) and len(under.strip()) >= len(title.strip()):
            indent = title[: len(title) - len(title.lstrip())]
            rubric = [indent + ".. rubric:: " + title.strip(), ""]
            if i and lines[i - 1].strip():
                rubric.insert(0, "")
            lines[i : i + 2] = rubric
        i += 1
    lines[:] = _space_lists(lines)


def setup(app):
    app.connect("missing-reference", resolve)
    app.connect("autodoc-process-docstring", convert_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

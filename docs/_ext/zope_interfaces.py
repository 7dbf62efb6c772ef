"""The ``autointerfaces`` directive: document a module's zope.interface interfaces.

autodoc skips ``zope.interface`` interfaces (they are InterfaceClass
instances, not classes), yet they are the contracts between the layers
(IMessageHandler, IBodySink, IRequestHandler, IManagement, ...). This
directive documents every interface *defined* in a module, in definition
order, as a ``py:class`` with its methods and attributes, so they can be
cross-referenced like any class.

Usage::

    .. autointerfaces:: msrp_twisted.protocol
"""

import importlib
import inspect

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from zope.interface.interface import InterfaceClass, Method

from twisted_links import convert_docstring


def _doc_lines(text, indent):
    lines = inspect.cleandoc(text or "").splitlines()
    convert_docstring(None, None, None, None, None, lines)
    return [(indent + line) if line.strip() else "" for line in lines]


def interface_lines(module_name, name, iface):
    out = [".. py:class:: %s" % name, "   :module: %s" % module_name, ""]
    out.append("   *Interface* (``zope.interface``).")
    out.append("")
    out.extend(_doc_lines(iface.__doc__, "   "))
    out.append("")
    for member_name, description in iface.namesAndDescriptions():
        if isinstance(description, Method):
            out.append("   .. py:method:: %s%s" % (member_name, description.getSignatureString()))
        else:
            out.append("   .. py:attribute:: %s" % member_name)
        out.append("")
        out.extend(_doc_lines(description.getDoc(), "      "))
        out.append("")
    return out


class AutoInterfaces(Directive):
    required_arguments = 1
    has_content = False

    def run(self):
        module_name = self.arguments[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise self.error("autointerfaces: cannot import %s: %s" % (module_name, e))
        lines = []
        for name, obj in vars(module).items():
            if isinstance(obj, InterfaceClass) and obj.__module__ == module_name:
                lines.extend(interface_lines(module_name, name, obj))
        if not lines:
            raise self.error("autointerfaces: %s defines no interface" % module_name)
        source = "<autointerfaces %s>" % module_name
        content = StringList(lines, source=source)
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return container.children


def setup(app):
    app.add_directive("autointerfaces", AutoInterfaces)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

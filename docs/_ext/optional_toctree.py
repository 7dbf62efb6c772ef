"""Links to pages that may not exist yet.

Some pages (e.g. reliability.md) are written by other people and may land
after the pages that link to them; a plain toctree entry or ``doc`` link
would fail the -W build until they do.

* ``toctree-optional``: a toctree whose entries naming a missing document
  are dropped (logged at info level); otherwise it is ``toctree``.
* ``optional-doc`` role: a ``doc`` link when the page exists, else the
  plain text ``docs/NAME.md``.
"""

import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.directives.other import TocTree
from sphinx.util import docname_join, logging

logger = logging.getLogger(__name__)
_EXPLICIT = re.compile(r"^(.+?)\s*<(.+)>$")


class OptionalTocTree(TocTree):
    def run(self):
        env = self.env
        kept = StringList()
        for offset, line in enumerate(self.content):
            entry = line.strip()
            match = _EXPLICIT.match(entry)
            name = match.group(2) if match else entry
            if entry and name != "self" and "://" not in name \
                    and docname_join(env.docname, name) not in env.found_docs:
                logger.info("toctree-optional: %s is not there yet; left out", name)
                continue
            kept.append(line, *self.content.info(offset))
        self.content = kept
        return super().run()


def optional_doc_role(name, rawtext, text, lineno, inliner, options=None, content=()):
    env = inliner.document.settings.env
    target = text.strip()
    if docname_join(env.docname, target) not in env.found_docs:
        shown = "docs/%s.md" % target.lstrip("/")
        return [nodes.literal(rawtext, shown)], []
    node = addnodes.pending_xref(rawtext, refdomain="std", reftype="doc", reftarget=target,
                                 refexplicit=False, refwarn=True, refdoc=env.docname)
    node += nodes.inline(rawtext, target, classes=["xref", "std", "std-doc"])
    return [node], []


def setup(app):
    app.add_directive("toctree-optional", OptionalTocTree)
    app.add_role("optional-doc", optional_doc_role)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

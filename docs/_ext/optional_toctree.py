"""``toctree-optional``: a toctree that leaves out pages that do not exist yet.

Some pages (e.g. reliability.md) are written by other people and may land
after this index; a plain toctree naming them would fail the -W build until
they do. Entries naming a missing document are dropped (logged at info
level); everything else behaves as ``toctree``.
"""

import re

from docutils.statemachine import StringList
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


def setup(app):
    app.add_directive("toctree-optional", OptionalTocTree)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx configuration for the msrp_twisted documentation.

Build (from the repository root):

    sphinx-build -W -b html docs docs/_build/html

The build is offline: references to Twisted are resolved by the local
``twisted_links`` extension (docs/_ext/) to pages of Twisted's API docs,
without fetching an intersphinx inventory. The parameter table of the admin
guide is generated from msrp_twisted.config.OPTIONS by ``msrp_options``.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

project = "msrp_twisted"
author = "msrp_twisted contributors"
copyright = "msrp_twisted contributors"

try:
    from importlib.metadata import version as _version

    release = _version("msrp_twisted")
except Exception:
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "twisted_links",
    "zope_interfaces",
    "optional_toctree",
    "msrp_options",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Every reference must resolve: a wrong name in the docs is a build error
# under -W.
nitpicky = True
# Keep "--option" and quotes as typed: these pages are full of command lines.
smartquotes = False

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False

html_theme = "alabaster"
html_title = "msrp_twisted %s" % release
html_static_path = []
html_theme_options = {
    "description": "MSRP (RFC 4975) and RFC 4976 relay for Twisted",
    "fixed_sidebar": True,
}

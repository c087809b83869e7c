"""
Equations rendered to MathML when the docs are built (latex2mathml), so that the pages need no MathJax.

Sphinx's default HTML math renderer leaves the LaTeX in the page for MathJax to typeset in the reader's browser,
loaded from a CDN: a page opened offline, or by the headless browser the docs are checked with, shows the raw LaTeX.
MathML is rendered by the browser itself (every current browser implements MathML Core). A formula latex2mathml
cannot convert is a build warning, and so fails ``make docs`` (``-W``).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.application import Sphinx
from sphinx.locale import _
from sphinx.util import logging
from sphinx.util.math import get_node_equation_number
from sphinx.writers.html5 import HTML5Translator

logger = logging.getLogger(__name__)


def to_mathml(latex: str, display: str, node: nodes.Node) -> str:
    """:return: the MathML of ``latex``, or the escaped LaTeX with a build warning when it cannot be converted"""
    try:
        return convert(latex.strip(), display=display)
    except Exception as error:  # latex2mathml raises several kinds of errors on LaTeX it does not know
        logger.warning("cannot convert the formula %r to MathML: %s", latex, error, location=node)
        return f"<code>{latex}</code>"


def visit_math(self: HTML5Translator, node: nodes.math) -> None:
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
    self.body.append(to_mathml(node.astext(), "inline", node))
    self.body.append("</span>")
    raise nodes.SkipNode


def visit_displaymath(self: HTML5Translator, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, _("Link to this equation"))
        self.body.append("</span>")
    # Paragraphs of one math block (separated by a blank line) are separate equations, as Sphinx's MathJax renderer has it.
    for part in (part for part in node.astext().split("\n\n") if part.strip()):
        self.body.append(to_mathml(part, "block", node))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    app.config.html_math_renderer = "mathml"
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

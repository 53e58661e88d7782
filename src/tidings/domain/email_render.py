"""An email made from a batch's templates for one recipient: the subject, the inner body (Markdown,
which may hold HTML) set into the outer HTML layout, the text part made from the body, and a PDF
made from HTML. Pure computation, no I/O.

PDFs are made by ``fpdf2``, in pure Python: it installs from the project's own dependencies on any
machine, with no system libraries (WeasyPrint needs Pango and Cairo from the distribution), and a
one-page invoice takes about 4 ms. It understands a subset of HTML: headings, paragraphs, bold and
italic, lists, tables, links, images by URL are not fetched. Text is set in Helvetica, which covers
Latin-1; a PDF that needs other characters is set in DejaVu Sans when the machine has it
(``fonts-dejavu-core``), which covers most scripts but costs about 0.1 s a document to load, and
is refused with ``render_failed`` when it does not.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from tidings.domain.email_text import html_to_text
from tidings.domain.templates import Template
from tidings.errors import RenderFailed

_MARKDOWN = MarkdownIt("commonmark", {"html": True})
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
UNICODE_FONT_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def render_email(
    subject: Template, inner: Template, outer: Template | None, context: dict[str, Any]
) -> tuple[str, str, str]:
    """The subject, HTML and text of one recipient's email."""
    title = " ".join(subject.render(context).split())
    if not title:
        raise RenderFailed("the subject is empty for this recipient", field=subject.field)
    body = _MARKDOWN.render(inner.render(context))
    html = outer.render({**context, "content": Markup(body)}) if outer is not None else body
    return title, html, html_to_text(body)


@functools.lru_cache(maxsize=1)
def _unicode_font() -> bool:
    return UNICODE_FONT.is_file() and UNICODE_FONT_BOLD.is_file()


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def html_to_pdf(html: str, field: str = "pdf_template") -> bytes:
    """A PDF of ``html``; :class:`RenderFailed` when it cannot be made."""
    from fpdf import FPDF
    from fpdf.errors import FPDFException

    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    # Helvetica when it can set the text (about 4 ms a page); loading the TrueType font costs a
    # hundred milliseconds a document, so only text beyond Latin-1 pays for it.
    if not html.isascii() and not _latin1(html) and _unicode_font():
        pdf.add_font("dejavu", "", str(UNICODE_FONT))
        pdf.add_font("dejavu", "B", str(UNICODE_FONT_BOLD))
        pdf.set_font("dejavu", size=11)
    else:
        pdf.set_font("helvetica", size=11)
    try:
        pdf.write_html(html)
        return bytes(pdf.output())
    except (FPDFException, UnicodeEncodeError, ValueError, KeyError, NotImplementedError) as exc:
        raise RenderFailed(f"the PDF could not be made: {exc}", field=field) from exc

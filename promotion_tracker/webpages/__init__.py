"""Server-rendered pages for people: one Jinja2 environment, locale negotiation, Babel catalogues and
the locale-aware format filters, shared by every page of the node.

The bureau's pages use it now; the public landing page and the operator console (in ``resolver``)
extend the same ``base.html`` and register their own templates and catalogues with
:func:`setup_pages`. Nothing here knows about tallies. Dependency direction: ``resolver`` →
``promotion_tracker`` → ``registry``.
"""

from promotion_tracker.webpages.environment import PageSources, render_page, setup_pages
from promotion_tracker.webpages.formatting import format_date, format_datetime, format_money, format_number
from promotion_tracker.webpages.locales import DEFAULT_LOCALE, LOCALES, negotiate_locale, translations

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "PageSources",
    "format_date",
    "format_datetime",
    "format_money",
    "format_number",
    "negotiate_locale",
    "render_page",
    "setup_pages",
    "translations",
]

"""Resolution for people: a handle's URL on the node (``/88.118.8.1001/SKU-1``) redirects, shows a
landing page, or answers JSON or a linkset, as HANDLE.NET's and the DOI proxies do; the node's home
page resolves what a person types. Other routes that map a request to a handle (GS1 Digital Link)
answer through :func:`resolver.proxy.answer.answer_handle`."""

from pathlib import Path

from promotion_tracker.webpages import PageSources
from resolver.proxy.answer import answer_handle
from resolver.proxy.routes import add_proxy_routes

__all__ = ["PROXY_PAGES", "add_proxy_routes", "answer_handle"]

PROXY_PAGES = PageSources(Path(__file__).parent / "templates", Path(__file__).parent / "locale")

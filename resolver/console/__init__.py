"""The web console at ``/console``: enterprise administrators and the node's operator, signed in
with the same identity and secret key as the API, in a browser.

Modules: ``site`` (wiring, middleware, HTML errors), ``sessions`` (aiohttp-session storage in the
node's store), ``guard`` (who is signed in, CSRF and Origin checks), ``signin``, ``enterprise`` and
``operator`` (the pages' routes and contexts), ``forms`` (form input, the template-generated
identifier form), ``charts`` (the dashboard's bars). Templates in ``templates/console/``, messages
in ``locale/``.
"""

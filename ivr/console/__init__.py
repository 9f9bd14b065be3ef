"""The web console (issue 12): login, wallboard, agent panel and dialplan editor, in
Chinese and English, served by the application itself (plain HTML, CSS and ES modules in
``static/`` and ``pages/``: no CDN, no build step).  :mod:`ivr.console.routes` adds the
pages (gated on the server by the browser session's role) and files; everything the
pages show or do goes through the HTTP API (:mod:`ivr.api`) with the session cookie and
its CSRF token.  See docs/console.md."""

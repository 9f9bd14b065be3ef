"""The HTTP API (issue 12): routes on the one application object (:mod:`ivr.app`).

* :mod:`ivr.api.errors` — the API layer's exception tree, mapped once to JSON
  ``{code, message: {zh, en}}`` by the error middleware;
* :mod:`ivr.api.auth` — tokens (stored hashed in Redis), roles and permissions, the
  failed-authentication limiter;
* :mod:`ivr.api.sessions` — browser sessions (HttpOnly, SameSite=Strict cookie, hashed
  in Redis, CSRF token); their routes in :mod:`ivr.api.session_routes`;
* :mod:`ivr.api.audit` — every mutating action recorded in a Redis stream;
* :mod:`ivr.api.prometheus` — :mod:`ivr.metrics` in Prometheus text format (pure);
* :mod:`ivr.api.http` — the routes, each declared with its permission, and the
  middleware; ``openapi.json`` is the API's document, served at ``/api/openapi.json``;
* :mod:`ivr.api.cli` — ``ivr tokens create|list|revoke``.

See docs/api.md.
"""

"""``sealroom ui``: a local review page for the people who approve.

A web app served by the party's own process on 127.0.0.1 (:mod:`sdk.party.ui.server`), with
the party's key file and home like every other command, behind a one-time token, a session
cookie, Host, Origin and CSRF checks and a strict Content-Security-Policy
(:mod:`sdk.party.ui.security`). Pages are rendered on the server from what the SDK verified
(:mod:`sdk.party.ui.state`), with charts as inline SVG (:mod:`sdk.party.ui.charts`) and no
JavaScript at all. Approving calls :func:`sdk.party.bundles.decide`, as ``bundle approve`` does.
"""

"""The edge proxy: public URLs ``<subdomain>.<apps_domain>`` routed to sandbox ports.

``EdgeProxy`` (proxy/server.py) listens; ``downstream`` parses client requests and streams them
to ``upstream`` connections into sandboxes; ``routing`` maps host names to jobs (cached);
``dialer`` asks agents where a sandbox is, wakes it and keeps it awake while traffic flows.
See docs/PROXY.md.
"""

from mags.proxy.server import EdgeProxy, start_embedded_proxy

__all__ = ["EdgeProxy", "start_embedded_proxy"]

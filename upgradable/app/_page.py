# The page `twistd upgradable` serves when no --path is given: what this
# server upgrades to and how to try each protocol.
from __future__ import annotations

from collections.abc import Sequence
from html import escape

from twisted.web.resource import Resource
from twisted.web.server import Request

from ..interfaces import IUpgradeProtocolPlugin

__all__ = ["WelcomePage"]

#: How many renderings of the page are kept (one per scheme, host and port).
_PAGES = 64


class WelcomePage(Resource):
    """Describes the enabled protocols, with examples filled in for this host."""

    isLeaf = True

    def __init__(self, plugins: Sequence[IUpgradeProtocolPlugin], auth: bool) -> None:
        super().__init__()
        self.plugins = list(plugins)
        self.auth = auth
        self._pages: dict[tuple[str, str, int], bytes] = {}

    def render_GET(self, request: Request) -> bytes:
        if request.path == b"/chat" and any(b"websocket" in p.tokens for p in self.plugins):
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            return _CHAT
        host = request.getRequestHostname().decode("ascii", "replace")
        scheme = "https" if request.isSecure() else "http"
        # The port the client used: from Host, else the socket's (a UNIX
        # socket has none), else the scheme's default.
        hostField = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        _, colon, hostPortPart = hostField.rpartition(":")
        if colon and hostPortPart.isdigit() and not hostField.endswith("]"):
            port = int(hostPortPart)
        else:
            port = getattr(request.getHost(), "port", None) or (443 if scheme == "https" else 80)
        hostPort = f"[{host}]" if ":" in host else host
        # The page changes only with what the examples say to connect to:
        # made once for each, and kept for a bounded number of them (a
        # client chooses its Host field).
        key = (scheme, hostPort, port)
        body = self._pages.get(key)
        if body is None:
            body = self._page(f"{scheme}://{hostPort}:{port}/", hostPort, port)
            if len(self._pages) >= _PAGES:
                self._pages.clear()
            self._pages[key] = body
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return body

    def _page(self, url: str, hostPort: str, port: int) -> bytes:
        """The page, with its examples filled in for ``url``."""
        items = []
        for plugin in self.plugins:
            tokens = ", ".join(t.decode("ascii") for t in plugin.tokens)
            usage = plugin.usage.format(url=url, host=hostPort, port=port) if plugin.usage else ""
            items.append(
                f"<h2>{escape(plugin.name)}: <code>Upgrade: {escape(tokens)}</code></h2>\n"
                f"<p>{escape(plugin.description)}</p>\n"
                + (f"<pre>{escape(usage)}</pre>\n" if usage else "")
            )
        authNote = (
            "<p>Upgrades need HTTP Basic credentials (<code>curl -u user:password</code>).</p>\n"
            if self.auth
            else ""
        )
        body = (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<title>upgradable</title></head><body>\n"
            "<h1>This server switches protocols</h1>\n"
            "<p>Send an HTTP/1.1 request with <code>Connection: Upgrade</code> and "
            "<code>Upgrade: &lt;token&gt;</code>; after <code>101 Switching Protocols</code> "
            "the same connection speaks the protocol you asked for.</p>\n"
            + authNote
            + ("".join(items) or "<p>No protocol is enabled.</p>\n")
            + "</body></html>\n"
        ).encode("utf-8")
        return body

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


# A small chat page for the websocket-echo sample: it connects back to the
# server it came from, sends what is typed (or ?say=... at once) and lists
# every message it receives.
_CHAT = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>upgradable chat</title></head>
<body>
<h1>WebSocket chat</h1>
<p id="status">connecting</p>
<form id="form"><input id="text" autocomplete="off"><button>Send</button></form>
<ul id="messages"></ul>
<script>
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(scheme + "//" + location.host + "/chat");
const status = document.getElementById("status");
const list = document.getElementById("messages");
socket.onopen = () => {
  status.textContent = "connected";
  const say = new URLSearchParams(location.search).get("say");
  if (say) socket.send(say);
};
socket.onmessage = (event) => {
  const item = document.createElement("li");
  item.className = "echo";
  item.textContent = event.data;
  list.appendChild(item);
};
socket.onclose = (event) => { status.textContent = "closed " + event.code; };
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  socket.send(input.value);
  input.value = "";
};
</script>
</body></html>
"""

"""Two clients of the `irc` package (PyPI) chatting: the check both IRC
end-to-end tests run, whatever is between them and the server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EXPECTED = [
    ("alice", "alice", "hello alice"),
    ("bob", "#test", "hello channel"),
    ("bob", "bob", "hello bob"),
]


def chat(host: str, port: int, connectFactory: Callable[..., Any] | None = None) -> list[Any]:
    """
    alice and bob register, join #test; alice speaks to the channel and to
    bob, bob answers alice. Returns what each heard, sorted (see EXPECTED).
    """
    import irc.client

    reactor = irc.client.Reactor()
    extra = {"connect_factory": connectFactory} if connectFactory else {}
    alice = reactor.server().connect(host, port, "alice", **extra)
    bob = reactor.server().connect(host, port, "bob", **extra)
    joined: set[str] = set()
    heard: list[tuple[str, str, str]] = []

    def onWelcome(connection: Any, event: Any) -> None:
        connection.join("#test")

    def onJoin(connection: Any, event: Any) -> None:
        # Each client sees its own JOIN once the server has added it.
        if event.source.nick == connection.get_nickname():
            joined.add(event.source.nick)
        if joined == {"alice", "bob"}:
            joined.add("done")
            alice.privmsg("#test", "hello channel")
            alice.privmsg("bob", "hello bob")

    def onMessage(connection: Any, event: Any) -> None:
        heard.append((connection.get_nickname(), event.target, event.arguments[0]))
        if event.target == "bob":
            bob.privmsg("alice", "hello alice")

    reactor.add_global_handler("welcome", onWelcome)
    reactor.add_global_handler("join", onJoin)
    reactor.add_global_handler("pubmsg", onMessage)
    reactor.add_global_handler("privmsg", onMessage)
    deadline = time.monotonic() + 20
    while len(heard) < 3 and time.monotonic() < deadline:
        reactor.process_once(0.1)
    alice.disconnect()
    bob.disconnect()
    return sorted(heard)

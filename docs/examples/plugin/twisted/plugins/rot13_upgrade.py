# A third-party package's plugin file: tiny, it imports only upgradable.plugin.
from upgradable.plugin import UpgradeProtocolPlugin

rot13 = UpgradeProtocolPlugin(
    name="rot13",
    tokens=[b"ROT13/1"],
    description="Answers every line rot13-encoded",
    handler="rot13proto:makeHandler",
    usage="(printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: Upgrade\\r\\n"
    "Upgrade: ROT13/1\\r\\n\\r\\nHello\\r\\n'; sleep 1) | socat - TCP:{host}:{port}",
)

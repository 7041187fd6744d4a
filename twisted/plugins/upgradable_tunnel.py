# The `twistd upgradable-tunnel` command; its code lives in upgradable.app.tunnel.
from twisted.application.service import ServiceMaker

upgradableTunnel = ServiceMaker(
    "upgradable-tunnel",
    "upgradable.app.tunnel",
    "Relay local TCP connections through an HTTP Upgrade to a server",
    "upgradable-tunnel",
)

# The `twistd upgradable` command; everything lives in upgradable.app.tap, which
# ServiceMaker imports only when the command runs.
from twisted.application.service import ServiceMaker

upgradableServer = ServiceMaker(
    "upgradable",
    "upgradable.app.tap",
    "An HTTP server that upgrades connections to other protocols (RFC 9110 §7.8)",
    "upgradable",
)

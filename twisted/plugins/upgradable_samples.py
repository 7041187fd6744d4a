# The sample protocols of upgradable. Only upgradable.plugin is imported here:
# each protocol's code is imported when a server enables it.
from upgradable.plugin import UpgradeProtocolPlugin

h2c = UpgradeProtocolPlugin(
    name="h2c",
    tokens=[b"h2c"],
    description="HTTP/2 over cleartext (RFC 7540 §3.2), serving the same site",
    handler="upgradable.protocols.h2c:makeHandler",
    enabledByDefault=True,
    usage="curl -v --http2 {url}\nnghttp -u -v -n {url}",
)

irc = UpgradeProtocolPlugin(
    name="irc",
    tokens=[b"IRC/6.9"],
    description="An IRC server (twisted.words): channels, private messages, PING/PONG",
    handler="upgradable.protocols.irc:makeHandler",
    enabledByDefault=True,
    usage=(
        "Send the upgrade request, then speak IRC on the same connection:\n"
        "(printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: Upgrade\\r\\n"
        "Upgrade: IRC/6.9\\r\\n\\r\\nNICK alice\\r\\nUSER alice 0 * :Alice\\r\\n"
        "JOIN #lobby\\r\\n'; sleep 2) | socat - TCP:{host}:{port}"
    ),
)

http2Echo = UpgradeProtocolPlugin(
    name="http2-echo",
    tokens=[b"HTTP/2.0"],
    description="A toy byte echo (not HTTP/2): every byte comes back unchanged",
    handler="upgradable.protocols.echo:makeHandler",
    enabledByDefault=True,
    usage=(
        "curl -i -N -H 'Connection: Upgrade' -H 'Upgrade: HTTP/2.0' {url} shows the 101;\n"
        "to see the echo, send bytes after the request:\n"
        "printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: Upgrade\\r\\n"
        "Upgrade: HTTP/2.0\\r\\n\\r\\nhello\\n' | socat -t 1 - TCP:{host}:{port}"
    ),
)

websocketEcho = UpgradeProtocolPlugin(
    name="websocket-echo",
    tokens=[b"websocket"],
    description="A WebSocket echo (RFC 6455, permessage-deflate) on every path",
    handler="upgradable.protocols.websocket:makeHandler",
    enabledByDefault=True,
    usage=(
        "Open {url}chat in a browser, or:\n"
        "python -m websockets ws://{host}:{port}/\n"
        "NODE_PATH=... node -e \"const W=require('ws');const w=new W('ws://{host}:{port}/');"
        "w.on('open',()=>w.send('hi'));w.on('message',m=>{{console.log(String(m));w.close()}})\""
    ),
)

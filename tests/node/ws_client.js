// A node `ws` client: sends a text and a binary message, prints the echoes
// as JSON lines, then closes with 1000 and prints the close code.
const WebSocket = require("ws");
const [url, compression] = process.argv.slice(2);
const socket = new WebSocket(url, { perMessageDeflate: compression === "deflate" });
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let received = 0;
socket.on("open", () => {
  out({ extensions: socket.extensions });
  socket.send("hello from node");
  socket.send(Buffer.from([0, 1, 2, 255]));
});
socket.on("message", (data, isBinary) => {
  out(isBinary ? { binary: [...data] } : { text: data.toString() });
  if (++received === 2) socket.close(1000, "done");
});
socket.on("close", (code) => { out({ close: code }); process.exit(0); });
socket.on("error", (err) => { out({ error: String(err) }); process.exit(1); });
setTimeout(() => { out({ error: "timeout" }); process.exit(2); }, 10000);

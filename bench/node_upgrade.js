// Node's http server with an 'upgrade' handler that answers 101 and pipes
// the socket back to itself: the Node.js peer of the handshake benchmark.
const http = require("http");
const port = Number(process.argv[2]);
const server = http.createServer((req, res) => res.end("hello\n"));
server.on("upgrade", (req, socket, head) => {
  socket.on("error", () => socket.destroy());  // a client's reset must not end the server
  socket.setNoDelay(true);
  socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " +
               req.headers.upgrade + "\r\n\r\n");
  if (head.length) socket.write(head);
  socket.pipe(socket);
});
server.listen({ port, host: "127.0.0.1", backlog: 1024 }, () => console.log("ready"));

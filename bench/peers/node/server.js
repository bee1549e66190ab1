// The near-limit peer of the benchmark (bench/run.py --systems node): one Node process on
// the `ws` package. A POST to /api/feeds/<slug>/comments/ renders the comment frame once
// (the same envelope as the project's JSON format) and writes it to every socket of that
// feed. No database, no ordering, no resume, no Redis: the floor of what a fan-out costs.
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 8090);
const feeds = new Map(); // slug -> Set of sockets
const FEED_PATH = /^\/ws\/feeds\/([-\w]+)\/(\?.*)?$/;
const POST_PATH = /^\/api\/feeds\/([-\w]+)\/comments\/$/;

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/api/feeds/") {
    return reply(res, 200, [{ slug: "demo", title: "Demo", last_seq: 0 }]);
  }
  const match = POST_PATH.exec(req.url);
  if (!match || req.method !== "POST") return reply(res, 404, { error: "not_found" });
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    let payload;
    try {
      payload = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (e) {
      return reply(res, 400, { error: "invalid" });
    }
    const slug = match[1];
    const seq = Number(payload.seq);
    if (!Number.isInteger(seq) || typeof payload.author !== "string" || typeof payload.body !== "string") {
      return reply(res, 400, { error: "invalid" });
    }
    const comment = { id: seq, seq, feed: slug, author: payload.author, body: payload.body,
                      created_at: new Date().toISOString() };
    const frame = JSON.stringify({ type: "comment.created", v: 1, feed: slug, seq, data: comment });
    for (const socket of feeds.get(slug) || []) socket.send(frame);
    reply(res, 201, comment);
  });
});

const wss = new WebSocketServer({ noServer: true, maxPayload: 5120, perMessageDeflate: false });
server.on("upgrade", (req, socket, head) => {
  const match = FEED_PATH.exec(req.url);
  if (!match) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    const slug = match[1];
    if (!feeds.has(slug)) feeds.set(slug, new Set());
    const members = feeds.get(slug);
    members.add(ws);
    ws.on("message", () => {}); // client frames (resume) are ignored
    ws.on("close", () => {
      members.delete(ws);
      if (members.size === 0) feeds.delete(slug);
    });
    ws.on("error", () => {});
  });
});

server.keepAliveTimeout = 60000;
server.listen({ host, port, backlog: 4096 }, () => console.log(`node peer listening on ${host}:${port}`));
process.on("SIGTERM", () => {
  console.log(`node peer stopping; ${wss.clients.size} sockets`);
  process.exit(0);
});

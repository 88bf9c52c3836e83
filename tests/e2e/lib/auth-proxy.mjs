// A test-only HTTP proxy that adds an Authorization header to every request, for clients that
// cannot send one (the MCP conformance suite connects without credentials). It streams both
// ways, keeps the Host header as the client sent it (so the gateway's Host checks still see it),
// and listens on 127.0.0.1 only.
import http from 'node:http';

export async function startAuthProxy(target, authorization) {
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    const headers = { ...req.headers, authorization };
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    res.on('close', () => out.destroy());
    req.pipe(out);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://localhost:${server.address().port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}

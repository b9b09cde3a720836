import { Agent, request } from 'node:http';

export interface HttpReply { status: number; body: string; headers: Record<string, string | string[] | undefined>; reused: boolean }

/** A small HTTP client for protocol tests: real sockets, explicit keep-alive control. */
export function post(port: number, path: string, body: string, opts: { headers?: Record<string, string>; agent?: Agent | false; method?: string } = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, path, method: opts.method ?? 'POST', agent: opts.agent ?? false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...opts.headers },
    }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, headers: res.headers, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

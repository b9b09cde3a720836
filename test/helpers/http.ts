import { Agent, request } from 'node:http';

export interface HttpReply { status: number; body: string; headers: Record<string, string | string[] | undefined>; reused: boolean }

/** The Dovecot API key the tests' rules and servers use; `post` sends it unless told otherwise. */
export const TEST_DOVECOT_KEY = 'test-dovecot-key-0123456789abcdef';

/** A small HTTP client for protocol tests: real sockets, explicit keep-alive control. */
export function post(port: number, path: string, body: string, opts: { headers?: Record<string, string>; agent?: Agent | false; method?: string; key?: string | false } = {}): Promise<HttpReply> {
  const key = opts.key === false ? {} : { 'x-api-key': opts.key ?? TEST_DOVECOT_KEY };
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, path, method: opts.method ?? 'POST', agent: opts.agent ?? false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...key, ...opts.headers },
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

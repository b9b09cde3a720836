// Slow clients for the Dovecot bench, in their own process (wrk blocks the bench's event loop):
//   node dist/bench/slow-clients.js <port> <count>
// Half send nothing, half dribble an HTTP request one byte a second; any the server closes are
// reopened, so the pressure lasts the whole measurement. Prints "ready" once all are connected.
import { connect } from 'node:net';

const [port, count] = [Number(process.argv[2]), Number(process.argv[3] ?? 1000)];
const REQUEST = 'POST /?command=allow HTTP/1.1\r\nHost: cidlock\r\nContent-Type: application/json\r\nX-API-Key: bench-dovecot-key-0123456789abcdef\r\nContent-Length: 100\r\n\r\n{"login":';
let connected = 0;
let told = false;

function open(i: number): void {
  const s = connect(port, '127.0.0.1');
  let timer: NodeJS.Timeout | undefined;
  s.on('connect', () => {
    if (++connected >= count && !told) {
      told = true;
      process.stdout.write('ready\n');
    }
    if (i % 2 === 1) {
      let k = 0;
      timer = setInterval(() => s.write(REQUEST[k++ % REQUEST.length]!), 1000);
    }
  });
  s.on('error', () => {});
  s.on('close', () => {
    clearInterval(timer);
    setTimeout(() => open(i), 100);
  });
}

for (let i = 0; i < count; i++) open(i);
process.on('SIGTERM', () => process.exit(0));

/**
 * RESP2, the Redis wire format: commands out (arrays of bulk strings) and an incremental reply
 * parser in. Pure: no sockets, no timers. Every size a peer controls is bounded, so a broken or
 * hostile server costs a protocol error, not the daemon's memory.
 */
import { RedisError, type RespArg, type RespValue } from './types.js';

/** Largest bulk string accepted; Redis' own proto-max-bulk-len defaults to 512 MiB, cidlock stores small values. */
export const MAX_BULK_BYTES = 64 * 1024 * 1024;
/** Most elements in one array reply. */
export const MAX_ARRAY_LENGTH = 1024 * 1024;
/** Deepest nesting of arrays (EVAL and XREAD replies nest 3 or 4 deep). */
export const MAX_DEPTH = 16;
/** Longest header or simple line (+, -, :, $, *), CRLF excluded. */
export const MAX_LINE_BYTES = 64 * 1024;

/** An error reply (`-ERR ...`): a value the server sent, not a failure of the parser. */
export interface RespErrorReply {
  readonly error: string;
}

/** What the parser yields: error replies may also sit inside arrays (EXEC, scripts). */
export type RespReply = string | number | null | RespErrorReply | RespReply[];

export function isErrorReply(r: RespReply): r is RespErrorReply {
  return typeof r === 'object' && r !== null && !Array.isArray(r);
}

/**
 * The first error reply nested anywhere in `r`, or null; a RespReply without one is a RespValue.
 * The contract's RespValue has no place for a nested error, so callers refuse the whole reply.
 */
export function nestedError(r: RespReply): RespErrorReply | null {
  if (isErrorReply(r)) return r;
  if (!Array.isArray(r)) return null;
  for (const item of r) {
    const e = nestedError(item);
    if (e) return e;
  }
  return null;
}

export function asRespValue(r: RespReply): RespValue {
  const e = nestedError(r);
  if (e) throw new RedisError('server', e.error);
  return r as RespValue;
}

/** One command as a RESP2 array of bulk strings, in a single buffer (one write per pipeline). */
export function encodeCommand(args: readonly RespArg[]): Buffer {
  if (args.length === 0) throw new TypeError('a Redis command needs at least its name');
  const parts: Buffer[] = [];
  let size = 0;
  for (const a of args) {
    let b: Buffer;
    if (Buffer.isBuffer(a)) b = a;
    else if (typeof a === 'number') {
      // "NaN" or "1e+21" would reach Redis as text it cannot use as a number; refuse here instead.
      if (!Number.isFinite(a)) throw new TypeError(`a Redis argument must be a finite number, got ${a}`);
      b = Buffer.from(Number.isInteger(a) && !Number.isSafeInteger(a) ? BigInt(a).toString() : String(a));
    } else b = Buffer.from(a, 'utf8');
    parts.push(b);
    size += b.length;
  }
  const head = `*${args.length}\r\n`;
  let total = head.length + size;
  for (const p of parts) total += String(p.length).length + 5; // $ len CRLF data CRLF
  const out = Buffer.allocUnsafe(total);
  let o = out.write(head, 0, 'latin1');
  for (const p of parts) {
    o += out.write(`$${p.length}\r\n`, o, 'latin1');
    o += p.copy(out, o);
    o += out.write('\r\n', o, 'latin1');
  }
  return out;
}

export interface RespBounds {
  maxBulkBytes?: number;
  maxArrayLength?: number;
  maxDepth?: number;
  maxLineBytes?: number;
}

export interface RespParser {
  /** Parses what `chunk` completes; whatever is left waits for the next chunk. Throws RedisError('protocol'). */
  push(chunk: Buffer): RespReply[];
}

const CR = 0x0d;
const LF = 0x0a;
const INTEGER = /^-?\d{1,20}$/;

/**
 * A resumable parser: it keeps the partial line or bulk as a list of slices and joins them once
 * when complete, so a reply split into many chunks costs O(size), never O(size²). Arrays being
 * filled are a stack, so nesting resumes at any byte. After a throw the parser is unusable (the
 * stream has lost its framing): drop the connection.
 */
export function createRespParser(bounds: RespBounds = {}): RespParser {
  const maxBulk = bounds.maxBulkBytes ?? MAX_BULK_BYTES;
  const maxArray = bounds.maxArrayLength ?? MAX_ARRAY_LENGTH;
  const maxDepth = bounds.maxDepth ?? MAX_DEPTH;
  const maxLine = bounds.maxLineBytes ?? MAX_LINE_BYTES;

  const stack: Array<{ items: RespReply[]; left: number }> = [];
  let parts: Buffer[] = [];
  let partsLen = 0;
  /** Bytes of a bulk still to read, CRLF included; -1 while reading a line. */
  let bulkLeft = -1;
  let bulkLen = 0;
  let broken: RedisError | null = null;

  const fail = (msg: string): never => {
    broken = new RedisError('protocol', msg);
    throw broken;
  };

  const take = (): Buffer => {
    const b = parts.length === 1 ? parts[0]! : Buffer.concat(parts, partsLen);
    parts = [];
    partsLen = 0;
    return b;
  };

  const emit = (value: RespReply, out: RespReply[]): void => {
    let v = value;
    for (;;) {
      const top = stack[stack.length - 1];
      if (!top) {
        out.push(v);
        return;
      }
      top.items.push(v);
      if (--top.left > 0) return;
      stack.pop();
      v = top.items;
    }
  };

  const length = (text: string, what: string): number => {
    if (!INTEGER.test(text)) fail(`bad ${what} length ${JSON.stringify(text.slice(0, 32))}`);
    return Number(text);
  };

  const line = (b: Buffer, out: RespReply[]): void => {
    // b is the line without its LF; it must end in CR.
    if (b.length < 2 || b[b.length - 1] !== CR) fail('a reply line must end in CRLF and not be empty');
    const type = b[0]!;
    const text = b.toString('utf8', 1, b.length - 1);
    switch (type) {
      case 0x2b: // '+'
        return emit(text, out);
      case 0x2d: // '-'
        return emit({ error: text }, out);
      case 0x3a: // ':'
        if (!INTEGER.test(text)) fail(`bad integer reply ${JSON.stringify(text.slice(0, 32))}`);
        // Above 2^53 a number loses precision; cidlock's counters stay far below.
        return emit(Number(text), out);
      case 0x24: {
        // '$'
        const n = length(text, 'bulk');
        if (n === -1) return emit(null, out);
        if (n < 0) fail(`bad bulk length ${n}`);
        if (n > maxBulk) fail(`bulk of ${n} bytes exceeds the bound of ${maxBulk}`);
        bulkLen = n;
        bulkLeft = n + 2;
        return;
      }
      case 0x2a: {
        // '*'
        const n = length(text, 'array');
        if (n === -1) return emit(null, out);
        if (n < 0) fail(`bad array length ${n}`);
        if (n > maxArray) fail(`array of ${n} elements exceeds the bound of ${maxArray}`);
        if (n === 0) return emit([], out);
        if (stack.length >= maxDepth) fail(`arrays nested deeper than ${maxDepth}`);
        stack.push({ items: [], left: n });
        return;
      }
      default:
        fail(`unknown reply type byte 0x${type.toString(16).padStart(2, '0')}`);
    }
  };

  const push = (chunk: Buffer): RespReply[] => {
    if (broken) throw broken;
    const out: RespReply[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (bulkLeft >= 0) {
        const n = Math.min(bulkLeft, chunk.length - pos);
        parts.push(chunk.subarray(pos, pos + n));
        partsLen += n;
        pos += n;
        bulkLeft -= n;
        if (bulkLeft > 0) break;
        bulkLeft = -1;
        const b = take();
        if (b[bulkLen] !== CR || b[bulkLen + 1] !== LF) fail('a bulk string must end in CRLF');
        emit(b.toString('utf8', 0, bulkLen), out);
        continue;
      }
      const lf = chunk.indexOf(LF, pos);
      const end = lf === -1 ? chunk.length : lf;
      // The CR counts toward the line, so the bound is maxLine + 1 bytes before the LF.
      if (partsLen + (end - pos) > maxLine + 1) fail(`a reply line is longer than ${maxLine} bytes`);
      parts.push(chunk.subarray(pos, end));
      partsLen += end - pos;
      if (lf === -1) break;
      pos = lf + 1;
      line(take(), out);
    }
    return out;
  };

  return { push };
}

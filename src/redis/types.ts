/**
 * The contract between cidlock and its own Redis client (the project allows no Redis library):
 * RESP2 over node:net, with bounds on everything a server or a network can make grow.
 */

/** A RESP2 reply. Bulk and simple strings are UTF-8 text; a nil bulk or nil array is null. */
export type RespValue = string | number | null | RespValue[];

/** A command's arguments; numbers are sent as their decimal text. */
export type RespArg = string | number | Buffer;

/** Where the client connects: one server, or the current primary that Sentinels name. */
export type RedisTarget =
  | { kind: 'direct'; host: string; port: number }
  | { kind: 'sentinel'; sentinels: ReadonlyArray<{ host: string; port: number }>; master: string };

/** A parsed `store.redis` URL: redis://HOST:PORT/DB or sentinel://HOST:PORT,HOST:PORT/MASTER/DB. */
export interface RedisAddress {
  target: RedisTarget;
  db: number;
  /** A password in the URL itself (redis://:PASSWORD@host) is refused by the parser: use password_file. */
}

/**
 * Why a command failed; each caller maps it once.
 * - unavailable: not connected (refused, reset, no primary known, closed) or the queue is full;
 *   the command was not sent, or its connection died before a reply: it may or may not have run;
 * - timeout: no reply within the command's time (the command may still run);
 * - server: the server answered with an error reply (its text is the message, e.g. "WRONGTYPE ...");
 * - protocol: the peer sent something that is not RESP2, or exceeded a bound.
 */
export type RedisErrorCode = 'unavailable' | 'timeout' | 'server' | 'protocol';

export class RedisError extends Error {
  override readonly name = 'RedisError';
  constructor(readonly code: RedisErrorCode, message: string) {
    super(message);
  }
}

export type RedisState = 'connecting' | 'ready' | 'down' | 'closed';

export interface RedisClientOptions {
  address: RedisAddress;
  /** AUTH before anything else (Redis 6 `AUTH password`; with `username`, `AUTH username password`). */
  password?: string;
  username?: string;
  /** Per-command reply deadline unless the call says otherwise. */
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Commands written but not yet answered, at most; beyond it calls fail with "unavailable". */
  maxPending?: number;
  /** Name shown by CLIENT LIST (CLIENT SETNAME), e.g. "cidlock:host-a". */
  name?: string;
  /** Told of every state change (for /readyz, metrics and logs); never given a password. */
  onState?: (state: RedisState, detail: string) => void;
}

export interface RedisClient {
  readonly state: RedisState;
  /** Host and port of the server currently connected (the primary, with Sentinel); null when down. */
  readonly server: string | null;
  /** Sends one command; several calls in the same tick go out in one write (pipelining). */
  command(args: readonly RespArg[], opts?: { timeoutMs?: number }): Promise<RespValue>;
  /** Resolves once connected (AUTH and SELECT done), or rejects "unavailable" after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** A connection in pub/sub mode: its own socket, resubscribed after every reconnect. */
export interface RedisSubscriber {
  readonly state: RedisState;
  /** Messages published to `channel` are passed to `onMessage` until the returned function is called. */
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** A client identity (draft-yu-imap-client-id): `<type> <token>`. */
export interface Cid {
  /** Always uppercase: types compare case-insensitively, so one spelling keeps hashes stable. */
  type: string;
  token: string;
}

export type CidResult = { ok: true; cid: Cid } | { ok: false; reason: string };

const MAX_INPUT = 512;
const MAX_TYPE = 16;
const MAX_TOKEN = 128;
// `_` is outside the draft's ABNF, but the drafts' own examples use `DEVICE_ID`, and clients copy examples.
const TYPE_RE = /^[A-Za-z0-9_-]+$/;
const TOKEN_RE = /^[\x21-\x7e]+$/;

function fail(reason: string): CidResult {
  return { ok: false, reason };
}

/**
 * Validates exactly "<type> <token>" (one space). Every reason is a fixed text: the token identifies a
 * device and reasons end up in logs, so no part of the input is ever echoed back.
 */
export function parseCid(value: string): CidResult {
  // Bounded before any scan: the value comes from the client, and a valid CID is at most 145 chars.
  if (value.length > MAX_INPUT) return fail(`CID longer than ${MAX_INPUT} characters`);
  if (value.length === 0) return fail('CID is empty');
  if (value.startsWith(' ')) return fail('CID has a leading space');

  const space = value.indexOf(' ');
  if (space < 0) return fail('CID has no space between type and token');

  const type = value.slice(0, space);
  const token = value.slice(space + 1);
  if (type.length > MAX_TYPE) return fail(`CID type longer than ${MAX_TYPE} characters`);
  if (!TYPE_RE.test(type)) return fail('CID type contains a character other than A-Z, a-z, 0-9, "-" or "_"');

  if (token.length === 0) return fail('CID token is empty');
  if (token.startsWith(' ')) return fail('CID has more than one space between type and token');
  if (token.endsWith(' ')) return fail('CID has a trailing space');
  if (token.includes(' ')) return fail('CID token contains a space');
  if (token.length > MAX_TOKEN) return fail(`CID token longer than ${MAX_TOKEN} characters`);
  if (!TOKEN_RE.test(token)) return fail('CID token contains a non-printable or non-ASCII character');

  return { ok: true, cid: { type: type.toUpperCase(), token } };
}

/** Canonical text used for hashing: `${TYPE} ${token}`. */
export function cidText(cid: Cid): string {
  // Uppercased again because a Cid may be built by hand (config, tests) rather than by parseCid; ASCII only,
  // so a hand-built non-ASCII type cannot be folded by Unicode rules into something that collides.
  return `${cid.type.replace(/[a-z]/g, (c) => c.toUpperCase())} ${cid.token}`;
}

/** The CID fields of a request: which CID counts, how it came, and whether another one disagreed. */
export interface PresentedCid {
  cid?: Cid;
  cidVia?: 'clientid' | 'imap_id';
  cidMismatch?: boolean;
  cidProblem?: string;
}

/**
 * The CLIENTID command's CID (from the login plugin, "<type> <token>") wins over one in an
 * IMAP ID field: the plugin accepted it over TLS with the draft's syntax, while the ID is
 * whatever the client wrote. Both are parsed, so a differing ID CID is reported, never used.
 */
export function presentedCid(clientid: string | undefined, idValue: string | undefined, idWhere: string): PresentedCid {
  const id = idValue === undefined ? undefined : parseCid(idValue);
  if (clientid !== undefined) {
    const c = parseCid(clientid);
    if (!c.ok) return { cidProblem: `malformed CID from the CLIENTID command: ${c.reason}` };
    const mismatch = id !== undefined && !(id.ok && cidText(id.cid) === cidText(c.cid));
    return { cid: c.cid, cidVia: 'clientid', ...(mismatch ? { cidMismatch: true } : {}) };
  }
  if (id === undefined) return {};
  return id.ok ? { cid: id.cid, cidVia: 'imap_id' } : { cidProblem: `malformed CID in ${idWhere}: ${id.reason}` };
}

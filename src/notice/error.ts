/**
 * Why a notice was not sent, as the caller must act on it: `rejected` (the mail system refused
 * it for good: do not retry), `temporary` (try later: a 4xx reply, a timeout, no connection),
 * `config` (the transport is set up wrong: tell the operator), `invalid` (the caller's message or
 * addresses are not acceptable: retrying cannot help).
 */
export type NoticeErrorCode = 'rejected' | 'temporary' | 'config' | 'invalid';

export class NoticeError extends Error {
  override readonly name = 'NoticeError';
  constructor(readonly code: NoticeErrorCode, message: string) {
    super(message);
  }
}

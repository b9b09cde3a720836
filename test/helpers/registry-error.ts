import * as assert from 'uvu/assert';
import { RegistryError } from '../../src/core/registry/types.js';

/** Awaits a promise that must reject with a RegistryError of this code whose message matches. */
export async function rejects(p: Promise<unknown>, code: string, message?: RegExp): Promise<RegistryError> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, RegistryError);
    const e = err as RegistryError;
    assert.is(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return e;
  }
  throw new assert.Assertion({ message: `expected a RegistryError "${code}"`, operator: 'rejects', expects: code, actual: 'resolved' });
}

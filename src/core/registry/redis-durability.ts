import { RedisError, type RedisClient, type RespValue } from '../../redis/types.js';

/**
 * What the Redis server's own settings would lose of what cidlock acknowledged. A registration is
 * acknowledged once Redis answered the write; that survives a crash of Redis only when every write
 * reaches the append-only file and is fsynced before the answer (appendonly yes, appendfsync
 * always), and survives memory pressure only when Redis never evicts keys (maxmemory-policy
 * noeviction). Returns one sentence per problem, for the daemon's start-up log and `cidlock check`.
 */
export async function redisDurabilityWarnings(client: RedisClient): Promise<string[]> {
  const get = async (name: string): Promise<string | null> => {
    const v: RespValue = await client.command(['CONFIG', 'GET', name]);
    return Array.isArray(v) && typeof v[1] === 'string' ? v[1] : null;
  };
  let appendonly: string | null;
  let appendfsync: string | null;
  let policy: string | null;
  try {
    [appendonly, appendfsync, policy] = await Promise.all([get('appendonly'), get('appendfsync'), get('maxmemory-policy')]);
  } catch (err) {
    if (err instanceof RedisError && err.code === 'server') {
      return [`cannot read the Redis server's persistence settings (CONFIG GET refused: ${err.message}); make sure it runs with appendonly yes, appendfsync always and maxmemory-policy noeviction, or acknowledged registrations can be lost`];
    }
    throw err;
  }
  const out: string[] = [];
  if (appendonly !== 'yes') out.push(`Redis runs with appendonly ${appendonly ?? '(unknown)'}: a crash of Redis loses every registration since its last snapshot; set appendonly yes and appendfsync always`);
  else if (appendfsync !== 'always') out.push(`Redis runs with appendfsync ${appendfsync ?? '(unknown)'}: a crash of its host can lose the last second of acknowledged registrations; set appendfsync always (cidlock writes little)`);
  if (policy !== 'noeviction') out.push(`Redis runs with maxmemory-policy ${policy ?? '(unknown)'}: under memory pressure it may evict registry keys; set maxmemory-policy noeviction`);
  return out;
}

/**
 * Routing of keys to vnodes, and the assignment of vnodes to group members.
 * Both are pure functions, specified in docs/scaling-out.md with test
 * vectors, so that every process (and every language) agrees on them.
 */
import { InvalidArgumentError } from '../errors.ts';

/** A routing key: bytes, or a string routed by its UTF-8 bytes. */
export type RoutingKey = Uint8Array | string;

/** The one hash a sharded queue routes with, as recorded in its descriptor. */
export const ROUTING_HASH = 'fnv1a-32';

/** Largest vnode capacity a sharded queue takes (vnode prefixes have four digits). */
export const MAX_VNODE_CAPACITY = 10_000;

const encoder = new TextEncoder();

/** The bytes of a key: a string's UTF-8, bytes as they are. */
export function keyBytes(key: RoutingKey): Uint8Array {
  if (typeof key === 'string') return encoder.encode(key);
  if (key instanceof Uint8Array) return key;
  throw new InvalidArgumentError(
    `a routing key must be a string or a Uint8Array, got ${key === null ? 'null' : typeof key}`,
  );
}

/** FNV-1a, 32 bits, of `bytes` (offset basis 0x811c9dc5, prime 0x01000193), as an unsigned integer. */
export function fnv1a32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * The vnode of a key: `fnv1a32(key bytes) mod vnodeCapacity`.
 *
 * @example
 * vnodeOf('user-1', 32); // 7 (see docs/scaling-out.md for more vectors)
 */
export function vnodeOf(key: RoutingKey, vnodeCapacity: number): number {
  return fnv1a32(keyBytes(key)) % vnodeCapacity;
}

/** The final mix of MurmurHash3 (fmix32): spreads FNV's output over all bits. */
function fmix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The rendezvous score of `member` for `vnode`: fmix32(fnv1a32(UTF-8 of the
 * member's instance id, one 0x00 byte, the vnode as u32 big-endian)).
 */
export function rendezvousScore(member: string, vnode: number): number {
  const id = encoder.encode(member);
  const bytes = new Uint8Array(id.byteLength + 5);
  bytes.set(id, 0);
  new DataView(bytes.buffer).setUint32(id.byteLength + 1, vnode >>> 0, false);
  return fmix32(fnv1a32(bytes));
}

/**
 * Which member each vnode goes to: rendezvous hashing with bounded load.
 * Vnodes are taken in order 0, 1, ...; each goes to the member with the
 * highest {@link rendezvousScore} among those holding fewer than
 * ceil(V / members) vnodes (ties: the smaller id). Every member computes the
 * same answer from the same set of live ids, a join or a death moves few
 * vnodes, and no member gets more than its share.
 *
 * @returns the owner of each vnode in `vnodes`, by vnode; empty without members
 */
export function assignVnodes(
  members: readonly string[],
  vnodes: readonly number[],
): Map<number, string> {
  const ids = [...new Set(members)].sort();
  const out = new Map<number, string>();
  if (ids.length === 0) return out;
  const cap = Math.ceil(vnodes.length / ids.length);
  const load = new Map<string, number>(ids.map((m) => [m, 0]));
  for (const v of [...vnodes].sort((a, b) => a - b)) {
    let best: string | undefined;
    let bestScore = -1;
    for (const m of ids) {
      if ((load.get(m) as number) >= cap) continue;
      const s = rendezvousScore(m, v);
      if (s > bestScore) {
        best = m;
        bestScore = s;
      }
    }
    const owner = best as string;
    out.set(v, owner);
    load.set(owner, (load.get(owner) as number) + 1);
  }
  return out;
}

/** The key prefix of vnode `v` under the sharded queue's prefix: `{prefix}/v{v:04}`. */
export function vnodePrefix(prefix: string, vnode: number): string {
  return `${prefix}/v${String(vnode).padStart(4, '0')}`;
}

/**
 * Parses a vnode list such as `0-7,12`: single vnodes and inclusive ranges,
 * separated by commas, each below `vnodeCapacity`.
 *
 * @throws {InvalidArgumentError} naming the part that is not a vnode, a range
 * that runs backwards, or a vnode outside the capacity.
 */
export function parseVnodeList(text: string, vnodeCapacity: number, what = 'vnodes'): number[] {
  const out = new Set<number>();
  const parts = text.split(',').map((p) => p.trim());
  for (const part of parts) {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(part);
    if (!m) {
      throw new InvalidArgumentError(
        `${what}: expected vnodes and ranges such as "0-7,12", got ${JSON.stringify(part)} in ${JSON.stringify(text)}`,
      );
    }
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) {
      throw new InvalidArgumentError(
        `${what}: the range "${part}" runs backwards; write it as "${to}-${from}"`,
      );
    }
    for (let v = from; v <= to; v++) {
      checkVnode(v, vnodeCapacity, what);
      out.add(v);
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** Refuses a vnode outside [0, vnodeCapacity). */
export function checkVnode(v: unknown, vnodeCapacity: number, what = 'vnode'): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v >= vnodeCapacity) {
    throw new InvalidArgumentError(
      `${what}: ${JSON.stringify(v)} is outside the vnode capacity; expected an integer from 0 to ${vnodeCapacity - 1} (vnodeCapacity ${vnodeCapacity})`,
    );
  }
}

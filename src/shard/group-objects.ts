/**
 * The objects a consumer group keeps in the store, under
 * `{prefix}/groups/{group}/` (docs/scaling-out.md §4): one lease per vnode
 * and one heartbeat per member process. UTF-8 JSON, a `format` tag and
 * `"version": 1` first, compact, one newline at the end.
 */
import { CorruptDataError } from '../errors.ts';
import { parseJsonObject } from './sharded-queue.ts';

export const LEASE_FORMAT = 'spillway-lease';
export const MEMBER_FORMAT = 'spillway-group-member';

/** `{prefix}/groups/{group}/leases/{v:04}`: who owns a vnode for the group. */
export interface Lease {
  group: string;
  vnode: number;
  /** Instance id of the owner; null once released. */
  owner: string | null;
  /** Random per process (per `join`): two processes with one instance id never share it. */
  session: string | null;
  /** Raised by one on each acquisition; kept by renewals and the release. */
  epoch: number;
  /** When the owner acquired it, by the owner's clock (display only). */
  acquiredAtMs: number;
  /** When it was last written, by the writer's clock (display only; never compared across hosts). */
  renewedAtMs: number;
}

/** `{prefix}/groups/{group}/members/{id}.{session}`: a member's heartbeat. */
export interface Member {
  group: string;
  instanceId: string;
  session: string;
  /** `dynamic` members share the vnodes by rendezvous hashing; `static` ones name theirs. */
  assignment: 'dynamic' | 'static';
  /** Raised by one on every heartbeat, so that every write changes the object. */
  beat: number;
  joinedAtMs: number;
  renewedAtMs: number;
  /** The vnodes it owned at its last heartbeat (display only). */
  vnodes: number[];
  /** The lease time-to-live it runs with, in ms. */
  leaseTtlMs: number;
}

/** The folder of a group's objects. */
export function groupPrefix(prefix: string, group: string): string {
  return `${prefix}/groups/${group}`;
}

/** Key of the lease of `vnode`. */
export function leaseKey(prefix: string, group: string, vnode: number): string {
  return `${groupPrefix(prefix, group)}/leases/${String(vnode).padStart(4, '0')}`;
}

/** Key of a member's heartbeat; the instance id is percent-encoded (it may hold "/"). */
export function memberKey(
  prefix: string,
  group: string,
  instanceId: string,
  session: string,
): string {
  return `${groupPrefix(prefix, group)}/members/${encodeURIComponent(instanceId)}.${session}`;
}

const encoder = new TextEncoder();

export function encodeLease(l: Lease): Uint8Array {
  return encoder.encode(
    `${JSON.stringify({ format: LEASE_FORMAT, version: 1, group: l.group, vnode: l.vnode, owner: l.owner, session: l.session, epoch: l.epoch, acquiredAtMs: l.acquiredAtMs, renewedAtMs: l.renewedAtMs })}\n`,
  );
}

export function decodeLease(body: Uint8Array, key: string): Lease {
  const v = parseJsonObject(body, key);
  checkFormat(v, LEASE_FORMAT, key);
  const owner = v.owner;
  const session = v.session;
  if (
    (owner !== null && typeof owner !== 'string') ||
    (session !== null && typeof session !== 'string')
  ) {
    throw new CorruptDataError(`${key}: owner and session must be strings or null`, key);
  }
  if ((owner === null) !== (session === null)) {
    throw new CorruptDataError(`${key}: owner and session must both be set or both null`, key);
  }
  return {
    group: str(v, 'group', key),
    vnode: int(v, 'vnode', key),
    owner,
    session,
    epoch: int(v, 'epoch', key),
    acquiredAtMs: int(v, 'acquiredAtMs', key),
    renewedAtMs: int(v, 'renewedAtMs', key),
  };
}

export function encodeMember(m: Member): Uint8Array {
  return encoder.encode(
    `${JSON.stringify({ format: MEMBER_FORMAT, version: 1, group: m.group, instanceId: m.instanceId, session: m.session, assignment: m.assignment, beat: m.beat, joinedAtMs: m.joinedAtMs, renewedAtMs: m.renewedAtMs, vnodes: m.vnodes, leaseTtlMs: m.leaseTtlMs })}\n`,
  );
}

export function decodeMember(body: Uint8Array, key: string): Member {
  const v = parseJsonObject(body, key);
  checkFormat(v, MEMBER_FORMAT, key);
  const assignment = v.assignment;
  if (assignment !== 'dynamic' && assignment !== 'static') {
    throw new CorruptDataError(
      `${key}: assignment must be "dynamic" or "static", got ${JSON.stringify(assignment)}`,
      key,
    );
  }
  const vnodes = v.vnodes;
  if (
    !Array.isArray(vnodes) ||
    !vnodes.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)
  ) {
    throw new CorruptDataError(`${key}: vnodes must be an array of integers >= 0`, key);
  }
  return {
    group: str(v, 'group', key),
    instanceId: str(v, 'instanceId', key),
    session: str(v, 'session', key),
    assignment,
    beat: int(v, 'beat', key),
    joinedAtMs: int(v, 'joinedAtMs', key),
    renewedAtMs: int(v, 'renewedAtMs', key),
    vnodes: vnodes as number[],
    leaseTtlMs: int(v, 'leaseTtlMs', key),
  };
}

function checkFormat(v: Record<string, unknown>, format: string, key: string): void {
  if (v.format !== format || v.version !== 1) {
    throw new CorruptDataError(
      `${key}: expected format "${format}" version 1, got format ${JSON.stringify(v.format)} version ${JSON.stringify(v.version)}`,
      key,
    );
  }
}

function str(v: Record<string, unknown>, field: string, key: string): string {
  const x = v[field];
  if (typeof x !== 'string') throw new CorruptDataError(`${key}: ${field} must be a string`, key);
  return x;
}

function int(v: Record<string, unknown>, field: string, key: string): number {
  const x = v[field];
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
    throw new CorruptDataError(
      `${key}: ${field} must be an integer >= 0, got ${JSON.stringify(x)}`,
      key,
    );
  }
  return x;
}

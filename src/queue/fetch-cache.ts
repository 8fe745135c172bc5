/**
 * Reads of immutable objects (batch objects, log commits) shared within a
 * process: when several subscriptions (or read-aheads) of one process want
 * the same object at about the same time, the store is asked once. Bounded:
 * only reads in flight and, for a few seconds, the most recent reads up to a
 * byte budget are kept.
 */
import { abortable } from '../lifecycle.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** Bytes of recently completed reads kept for late sharers. */
const RECENT_BUDGET_BYTES = 32 * 1024 * 1024;
/** How long a completed read may be shared, in ms. */
const RECENT_TTL_MS = 5000;
/** Objects larger than this are shared only while in flight. */
const RECENT_MAX_OBJECT_BYTES = 8 * 1024 * 1024;

interface Recent {
  bytes: Uint8Array;
  at: number;
}

interface StoreReads {
  inFlight: Map<string, Promise<Uint8Array>>;
  recent: Map<string, Recent>;
  recentBytes: number;
}

const byStore = new WeakMap<ObjectStore, StoreReads>();

/**
 * The bytes of `key`, an object that never changes once written, read once
 * per process for concurrent (and recent) callers. The shared request runs
 * without any one caller's signal; `signal` aborts only this caller's wait.
 * Callers must not modify the bytes.
 */
export function readShared(
  store: ObjectStore,
  key: string,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  let reads = byStore.get(store);
  if (!reads) {
    reads = { inFlight: new Map(), recent: new Map(), recentBytes: 0 };
    byStore.set(store, reads);
  }
  const r = reads;
  const recent = r.recent.get(key);
  if (recent && performance.now() - recent.at < RECENT_TTL_MS) return Promise.resolve(recent.bytes);
  let pending = r.inFlight.get(key);
  if (!pending) {
    pending = store.get(key).then((got) => got.body);
    r.inFlight.set(key, pending);
    pending.then(
      (bytes) => {
        r.inFlight.delete(key);
        remember(r, key, bytes);
      },
      () => r.inFlight.delete(key),
    );
  }
  return abortable(pending, signal);
}

function remember(r: StoreReads, key: string, bytes: Uint8Array): void {
  if (bytes.byteLength > RECENT_MAX_OBJECT_BYTES) return;
  const now = performance.now();
  const old = r.recent.get(key);
  if (old) {
    r.recent.delete(key);
    r.recentBytes -= old.bytes.byteLength;
  }
  r.recent.set(key, { bytes, at: now });
  r.recentBytes += bytes.byteLength;
  // Oldest first (insertion order): drop what expired or does not fit.
  for (const [k, v] of r.recent) {
    if (r.recentBytes <= RECENT_BUDGET_BYTES && now - v.at < RECENT_TTL_MS) break;
    r.recent.delete(k);
    r.recentBytes -= v.bytes.byteLength;
  }
}

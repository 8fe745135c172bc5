/**
 * Reads of immutable objects (batch objects, log commits) shared within a
 * process: when several subscriptions (or read-aheads) of one process want
 * the same object at the same time, the store is asked once. Only reads in
 * flight are shared, so nothing is kept (memory is what the callers hold)
 * and a deleted object is never served.
 */
import { abortable } from '../lifecycle.ts';
import type { ObjectStore } from '../store/object-store.ts';

const inFlightByStore = new WeakMap<ObjectStore, Map<string, Promise<Uint8Array>>>();

/**
 * The bytes of `key`, an object that never changes once written, read once
 * for every caller in the process that asks while the read is in flight. The
 * shared request runs without any one caller's signal; `signal` aborts only
 * this caller's wait. Callers must not modify the bytes.
 */
export function readShared(
  store: ObjectStore,
  key: string,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  let inFlight = inFlightByStore.get(store);
  if (!inFlight) {
    inFlight = new Map();
    inFlightByStore.set(store, inFlight);
  }
  const reads = inFlight;
  let pending = reads.get(key);
  if (!pending) {
    pending = store.get(key).then((got) => got.body);
    reads.set(key, pending);
    const forget = (): void => {
      reads.delete(key);
    };
    pending.then(forget, forget);
  }
  return abortable(pending, signal);
}

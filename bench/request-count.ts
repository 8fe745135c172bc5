/**
 * Store requests and bytes written, counted around a piece of work: a
 * {@link FaultInjectingStore} (no faults) whose call counts are read before
 * and after, and a hook that adds up the bytes of every put.
 */
import type { ObjectStore } from '../src/index.ts';
import { FaultInjectingStore, type StoreOperation } from '../src/testing.ts';

/** Requests by operation, and bytes put, over some span of work. */
export interface RequestTally {
  put: number;
  get: number;
  head: number;
  list: number;
  delete: number;
  /** Every request, of any kind. */
  requests: number;
  /** Bytes of the bodies of every put. */
  bytesPut: number;
}

/** A counting wrapper around a store; {@link mark} and {@link since} bracket the work to count. */
export class RequestCount {
  /** The store to hand to the code being measured. */
  readonly store: FaultInjectingStore;
  private bytesPut = 0;

  constructor(inner: ObjectStore) {
    this.store = new FaultInjectingStore(inner);
    this.store.before('put', (call) => {
      this.bytesPut += call.body?.byteLength ?? 0;
    });
  }

  /** The counts so far (a mark to subtract later). */
  mark(): RequestTally {
    const c = this.store.stats.calls;
    return {
      put: c.put,
      get: c.get,
      head: c.head,
      list: c.list,
      delete: c.delete + c.deleteMany,
      requests: (Object.keys(c) as StoreOperation[]).reduce((sum, op) => sum + c[op], 0),
      bytesPut: this.bytesPut,
    };
  }

  /** What was counted since `mark`, divided by `per` (e.g. per append). */
  since(mark: RequestTally, per = 1): RequestTally {
    const now = this.mark();
    const out = {} as RequestTally;
    for (const k of Object.keys(now) as (keyof RequestTally)[]) out[k] = (now[k] - mark[k]) / per;
    return out;
  }
}

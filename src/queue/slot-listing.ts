/**
 * The slot objects of a log queue as one listing of `{root}/slots/` shows
 * them: their sequences and sizes, without reading any. The collector uses
 * it to count slot batches in retention by bytes, which commit totals do not
 * count (docs/log-layout.md §7.8, §7.9).
 */
import { slotSequenceOf } from '../format/log-slot.ts';
import type { ObjectStore } from '../store/object-store.ts';

/**
 * The slots a listing found, in sequence order, with running totals of
 * their sizes: memory of two numbers per slot.
 */
export class SlotListing {
  private readonly sequences: number[] = [];
  /** `cumulativeBytes[i]`: bytes of the slots before the i-th. */
  private readonly cumulativeBytes: number[] = [0];

  /** Slots listed. */
  get count(): number {
    return this.sequences.length;
  }

  /** Bytes of every slot listed. */
  get totalBytes(): number {
    return this.cumulativeBytes[this.sequences.length] ?? 0;
  }

  /** Records a slot; sequences must come in ascending order (a listing's key order). */
  add(sequence: number, sizeBytes: number): void {
    this.cumulativeBytes.push(this.totalBytes + sizeBytes);
    this.sequences.push(sequence);
  }

  /** Bytes of the slots listed at or after `sequence`. */
  bytesFrom(sequence: number): number {
    return this.totalBytes - (this.cumulativeBytes[this.indexOf(sequence)] ?? 0);
  }

  /** Index of the first slot listed at or after `sequence` (binary search). */
  private indexOf(sequence: number): number {
    let lo = 0;
    let hi = this.sequences.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.sequences[mid] as number) < sequence) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * Lists `{root}/slots/` in key order (which is sequence order: the keys are
 * 20 digits) up to the first slot at or above `range.until`, and keeps the
 * slots from `range.from` (default 0) on. Keys under `slots/` that are not
 * slot keys are passed over. Cost: one listing request per 1000 keys below
 * `until`; memory: two numbers per slot kept.
 */
export async function listSlots(
  store: ObjectStore,
  root: string,
  range: { from?: number; until: number },
  signal?: AbortSignal,
): Promise<SlotListing> {
  const listing = new SlotListing();
  for await (const meta of store.list(`${root}/slots/`, { signal })) {
    const sequence = slotSequenceOf(root, meta.key);
    if (sequence === undefined) continue;
    if (sequence >= range.until) break;
    if (sequence >= (range.from ?? 0)) listing.add(sequence, meta.size);
  }
  return listing;
}

import { asError, InvalidArgumentError } from '../errors.ts';

interface Waiter {
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

/**
 * A byte semaphore shared by the vnode producers of one process: bytes are
 * acquired before a call is handed to its vnode's producer and released once
 * that call is durable (or failed). Waiters are admitted in arrival order, so
 * a large call is not starved by small ones.
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly capacity: number) {}

  /** Bytes held now. */
  get usedBytes(): number {
    return this.used;
  }

  /**
   * Waits until `bytes` fit, then holds them.
   *
   * @throws {InvalidArgumentError} when `bytes` exceeds the whole capacity.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<void> {
    if (bytes > this.capacity) {
      throw new InvalidArgumentError(
        `this call needs ${bytes} bytes of buffer but maxBufferedBytes is ${this.capacity}; it can never fit`,
      );
    }
    signal?.throwIfAborted();
    if (this.waiters.length === 0 && this.used + bytes <= this.capacity) {
      this.used += bytes;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        bytes,
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(asError(signal?.reason));
          this.admit();
        },
      };
      signal?.addEventListener('abort', w.onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  /** Gives `bytes` back and admits waiters that now fit, in order. */
  release(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
    this.admit();
  }

  /** Rejects every waiter (close, destroy). */
  rejectAll(error: unknown): void {
    for (const w of this.waiters.splice(0)) {
      w.signal?.removeEventListener('abort', w.onAbort);
      w.reject(error);
    }
  }

  private admit(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0] as Waiter;
      if (this.used + w.bytes > this.capacity) return;
      this.waiters.shift();
      this.used += w.bytes;
      w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve();
    }
  }
}

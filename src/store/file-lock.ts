import { createHash } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { StorageError } from '../errors.ts';
import { sleep } from '../clock.ts';

/** Tail of the in-process queue for each lock name: acquirers chain behind it. */
const inProcess = new Map<string, Promise<void>>();

/**
 * A mutual-exclusion lock between every process on this machine that uses
 * the same name, released by the kernel when its holder dies (even by
 * SIGKILL), so a crash never leaves a stale lock behind.
 *
 * On Linux it is a listening socket in the abstract namespace: binding fails
 * with EADDRINUSE while another holder has it. (Processes in different network
 * namespaces, such as separate containers sharing a volume, do not see each
 * other's locks.) Elsewhere it is a socket file in `fallbackDir`; a file left
 * by a dead holder is detected by a refused connection and removed.
 */
export class FileLock {
  private readonly address: string;
  private readonly isAbstract: boolean;

  /**
   * @param scope what the lock protects (a store root and a key); hashed into the name
   * @param fallbackDir where socket files go on systems without abstract sockets
   */
  constructor(scope: string, fallbackDir: string) {
    const digest = createHash('sha256').update(scope).digest('hex').slice(0, 40);
    this.isAbstract = process.platform === 'linux';
    this.address = this.isAbstract ? `\0spillway-${digest}` : join(fallbackDir, `${digest}.sock`);
  }

  /**
   * Runs `fn` while holding the lock. Waits (polling with jittered backoff, at
   * most `maxPollMs` between looks) while another process holds it; `signal`
   * aborts the wait.
   */
  async withLock<T>(fn: () => Promise<T>, signal?: AbortSignal, maxPollMs = 20): Promise<T> {
    // Same-process callers queue on a promise chain instead of polling the socket.
    const previous = inProcess.get(this.address) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    inProcess.set(this.address, tail);
    try {
      await previous;
      const server = await this.acquire(signal, maxPollMs);
      try {
        return await fn();
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    } finally {
      release();
      if (inProcess.get(this.address) === tail) inProcess.delete(this.address);
    }
  }

  private async acquire(signal: AbortSignal | undefined, maxPollMs: number): Promise<net.Server> {
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const server = net.createServer();
      server.unref();
      const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        server.once('error', resolve);
        server.listen(this.address, () => resolve(undefined));
      });
      if (!error) return server;
      if (error.code !== 'EADDRINUSE') {
        throw new StorageError(`cannot take the file store lock: ${error.message}`, {
          cause: error,
        });
      }
      if (!this.isAbstract && (await this.isStale())) {
        await unlink(this.address).catch(() => undefined);
        continue;
      }
      // Holders keep the lock for one rename and fsync: poll quickly at first.
      await sleep(Math.min(maxPollMs, 0.25 * 2 ** Math.min(attempt, 7)) * (0.5 + Math.random()), {
        signal,
      });
    }
  }

  private async isStale(): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = net.connect(this.address);
      socket.once('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', (e: NodeJS.ErrnoException) =>
        resolve(e.code === 'ECONNREFUSED' || e.code === 'ENOENT'),
      );
    });
  }
}

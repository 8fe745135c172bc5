import { fstatSync } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';

/**
 * Tells whether anybody still reads the pipe on a file descriptor (stdout),
 * so a command that acknowledges what it printed can stop before
 * acknowledging output that a reader such as `head` went away without
 * reading.
 *
 * Bytes handed to a pipe sit in the kernel's pipe buffer (64 KiB) until the
 * reader takes them; a successful write says nothing about the reader. On
 * Linux the readers are found in `/proc` (processes holding the pipe open for
 * reading); elsewhere, and for sockets, terminals and files, the answer is
 * `'unknown'`, and the write's success is all there is to go by.
 *
 * What this cannot tell: whether a reader that is still there read (or will
 * read) what is in the buffer. A reader that exits later, with bytes unread,
 * takes them with it; the command's summary of acknowledged entries is then
 * more than the reader consumed. Documented as the limit of piping.
 */
export class PipeReaders {
  private readonly inode: number | undefined;
  /** Where a reader was last found, checked first next time: `/proc/<pid>/fd/<fd>`. */
  private known: string[] = [];

  /** @param fd the descriptor written to, 1 for stdout */
  constructor(fd = 1) {
    let inode: number | undefined;
    try {
      const st = fstatSync(fd);
      if (st.isFIFO() && process.platform === 'linux') inode = st.ino;
    } catch {
      inode = undefined;
    }
    this.inode = inode;
  }

  /** Whether the descriptor is a pipe whose readers can be checked. */
  get checkable(): boolean {
    return this.inode !== undefined;
  }

  /**
   * `'present'` when a process other than this one holds the pipe open for
   * reading, `'gone'` when none does, `'unknown'` when it cannot be told (not
   * a Linux pipe, or a process of the same pipeline belongs to another user
   * whose descriptors cannot be read).
   */
  async status(): Promise<'present' | 'gone' | 'unknown'> {
    if (this.inode === undefined) return 'unknown';
    const target = `pipe:[${this.inode}]`;
    const still: string[] = [];
    for (const path of this.known) if (await isReader(path, target)) still.push(path);
    if (still.length > 0) {
      this.known = still;
      return 'present';
    }
    // Processes whose descriptors we may not read (another user's) could be the reader
    // only if they share our pipeline: children of our parent (the shell), as
    // `spillway consume | sudo tee` is. Anyone else cannot hold our stdout.
    let unreadableSibling = false;
    const found: string[] = [];
    let pids: string[];
    try {
      pids = (await readdir('/proc')).filter((n) => /^[0-9]+$/.test(n));
    } catch {
      return 'unknown';
    }
    for (const pid of pids) {
      if (Number(pid) === process.pid) continue;
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch (e) {
        if (
          (e as NodeJS.ErrnoException).code !== 'ENOENT' &&
          (await parentOf(pid)) === process.ppid
        )
          unreadableSibling = true;
        continue;
      }
      for (const fd of fds) {
        const path = `/proc/${pid}/fd/${fd}`;
        if (await isReader(path, target)) found.push(path);
      }
    }
    this.known = found;
    if (found.length > 0) return 'present';
    return unreadableSibling ? 'unknown' : 'gone';
  }
}

/** The parent pid of a process, from `/proc/<pid>/stat` (readable by anyone). */
async function parentOf(pid: string): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ")" ends it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[1]);
  } catch {
    return undefined;
  }
}

async function isReader(fdPath: string, target: string): Promise<boolean> {
  try {
    if ((await readlink(fdPath)) !== target) return false;
    const info = await readFile(fdPath.replace('/fd/', '/fdinfo/'), 'utf8');
    const flags = /^flags:\s*([0-7]+)/m.exec(info)?.[1];
    // O_ACCMODE: 0 read-only, 1 write-only, 2 read-write.
    return flags !== undefined && (parseInt(flags, 8) & 3) !== 1;
  } catch {
    return false;
  }
}

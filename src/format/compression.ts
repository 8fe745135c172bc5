import zlib from 'node:zlib';
import type * as ZstdWasm from '@bokuweb/zstd-wasm';
import { CorruptDataError } from '../errors.ts';

/** Compression of a batch's record block. */
export type Compression = 'none' | 'zstd';

/** The zstd level Spillway writes, as the reference does. */
export const ZSTD_LEVEL = 3;

type NodeZstd = {
  zstdCompressSync(
    b: Uint8Array,
    o?: { params?: Record<number, number>; pledgedSrcSize?: number },
  ): Buffer;
  zstdDecompressSync(b: Uint8Array, o?: { maxOutputLength?: number }): Buffer;
  constants: Record<string, number>;
};
const nodeZstd =
  typeof (zlib as unknown as Partial<NodeZstd>).zstdCompressSync === 'function'
    ? (zlib as unknown as NodeZstd)
    : undefined;

type Wasm = typeof ZstdWasm;
let wasm: Promise<Wasm> | undefined;
function loadWasm(): Promise<Wasm> {
  wasm ??= import('@bokuweb/zstd-wasm').then(async (m) => {
    await m.init();
    return m;
  });
  return wasm;
}

/**
 * Compresses with zstd at level 3: Node's own zstd where the running Node has
 * it (22.15 and later), else a WebAssembly build of libzstd from npm. The
 * frame declares its content size, so readers can check it against their
 * limit before decompressing.
 */
export async function zstdCompress(data: Uint8Array): Promise<Uint8Array> {
  if (nodeZstd) {
    return nodeZstd.zstdCompressSync(data, {
      params: { [nodeZstd.constants.ZSTD_c_compressionLevel as number]: ZSTD_LEVEL },
      // Readers check the declared size against their limit before they decompress.
      pledgedSrcSize: data.byteLength,
    });
  }
  return (await loadWasm()).compress(data, ZSTD_LEVEL);
}

const ZSTD_MAGIC = 0xfd2fb528;
/** Skippable frames have magic numbers 0x184D2A50 to 0x184D2A5F. */
const SKIPPABLE_MAGIC = 0x184d2a50;
/** Block_Maximum_Size of the zstd format, before the window caps it. */
const ZSTD_MAX_BLOCK_BYTES = 128 * 1024;
/**
 * The most output plus input handed to the WebAssembly build of libzstd at
 * once. Its heap stops growing at 2 GiB, and it does not check that an
 * allocation succeeded; anything larger goes to the pure-JS decoder.
 */
const WASM_HEAP_BUDGET = 1536 * 1024 * 1024;
/**
 * The largest window the pure-JS streaming decoder is given, unless the limit
 * on the output is larger: it allocates the whole window up front. 8 MiB is
 * what the zstd format asks every decoder to support.
 */
const STREAMING_WINDOW_BYTES = 8 * 1024 * 1024;
/**
 * An empty zstd frame that declares no content size. Placed first, it makes
 * the WebAssembly build take its output capacity from the caller rather than
 * from the first real frame's header.
 */
const EMPTY_UNSIZED_FRAME = Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x01, 0x00, 0x00);
/** libzstd's error code for "destination buffer is too small". */
const ZSTD_ERROR_DST_SIZE_TOO_SMALL = 70;

/** One frame of a zstd stream, as its headers describe it, found without decompressing. */
export interface ZstdFrame {
  /** Offset of the frame's first byte. */
  start: number;
  /** Offset just after the frame's last byte. */
  end: number;
  /** True for a skippable frame, which decompresses to nothing. */
  skippable: boolean;
  /** Frame_Content_Size from the header, in bytes (0 for skippable frames); undefined when the frame does not declare one. */
  contentBytes: number | undefined;
  /** Bytes of history the frame may refer back to (0 for skippable frames). */
  windowBytes: number;
  /** Least the frame can decompress to, in bytes: the declared size, else the sizes of its raw and RLE blocks. */
  minBytes: number;
  /** Most the frame can decompress to, in bytes: the declared size, else its blocks' sizes and maxima. */
  maxBytes: number;
}

/**
 * Walks the frames of a zstd stream by their frame and block headers, without
 * decompressing anything: zstd frames, skippable frames, in any number.
 *
 * @param what the object's location, for error messages
 * @throws {CorruptDataError} when the bytes are not a sequence of whole frames.
 */
export function zstdFrames(data: Uint8Array, what: string): ZstdFrame[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = data.byteLength;
  const bad = (reason: string) =>
    new CorruptDataError(`${what}: the zstd record block is not valid zstd: ${reason}`, what);
  const frames: ZstdFrame[] = [];
  let at = 0;
  while (at < n) {
    const start = at;
    if (n - at < 4) throw bad(`${n - at} stray bytes at offset ${at}`);
    const magic = view.getUint32(at, true);
    if (magic >>> 4 === SKIPPABLE_MAGIC >>> 4) {
      if (n - at < 8) throw bad(`truncated skippable frame header at offset ${start}`);
      const size = view.getUint32(at + 4, true);
      at += 8 + size;
      if (at > n) {
        throw bad(
          `the skippable frame at offset ${start} needs ${size} bytes, ${n - start - 8} remain`,
        );
      }
      frames.push({
        start,
        end: at,
        skippable: true,
        contentBytes: 0,
        windowBytes: 0,
        minBytes: 0,
        maxBytes: 0,
      });
      continue;
    }
    if (magic !== ZSTD_MAGIC) throw bad(`no frame magic number at offset ${at}`);
    at += 4;
    if (at >= n) throw bad(`truncated frame header at offset ${start}`);
    const descriptor = data[at++] as number;
    const contentSizeFlag = descriptor >> 6;
    const singleSegment = (descriptor >> 5) & 1;
    const hasChecksum = (descriptor >> 2) & 1;
    if (descriptor & 0x08) throw bad(`the frame at offset ${start} sets a reserved header bit`);
    const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3] as number;
    const contentSizeBytes = contentSizeFlag === 0 ? singleSegment : 1 << contentSizeFlag;
    if (at + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes > n) {
      throw bad(`truncated frame header at offset ${start}`);
    }
    let windowBytes = 0;
    if (!singleSegment) {
      const w = data[at++] as number;
      // Powers of two, not shifts: the exponent reaches 41.
      const base = 2 ** (10 + (w >> 3));
      windowBytes = base + (base / 8) * (w & 7);
    }
    at += dictionaryIdBytes;
    let contentBytes: number | undefined;
    if (contentSizeBytes === 1) contentBytes = view.getUint8(at);
    else if (contentSizeBytes === 2) contentBytes = view.getUint16(at, true) + 256;
    else if (contentSizeBytes === 4) contentBytes = view.getUint32(at, true);
    else if (contentSizeBytes === 8) {
      // Above 2^53 this rounds, which is harmless: it is only ever compared with a limit.
      contentBytes = view.getUint32(at + 4, true) * 2 ** 32 + view.getUint32(at, true);
    }
    at += contentSizeBytes;
    if (singleSegment) windowBytes = contentBytes as number;
    const compressedBlockMax = Math.min(windowBytes, ZSTD_MAX_BLOCK_BYTES);
    let minBytes = 0;
    let maxBytes = 0;
    for (let last = 0; !last;) {
      if (at + 3 > n) throw bad(`truncated block header at offset ${at}`);
      const header =
        (data[at] as number) | ((data[at + 1] as number) << 8) | ((data[at + 2] as number) << 16);
      at += 3;
      last = header & 1;
      const type = (header >> 1) & 3;
      const size = header >>> 3;
      if (type === 3) throw bad(`reserved block type at offset ${at - 3}`);
      // An RLE block stores one byte and repeats it `size` times.
      const stored = type === 1 ? 1 : size;
      if (at + stored > n) {
        throw bad(`the block at offset ${at - 3} needs ${stored} bytes, ${n - at} remain`);
      }
      at += stored;
      if (type === 2) maxBytes += compressedBlockMax;
      else {
        minBytes += size;
        maxBytes += size;
      }
    }
    if (hasChecksum) {
      at += 4;
      if (at > n) throw bad(`truncated checksum of the frame at offset ${start}`);
    }
    frames.push({
      start,
      end: at,
      skippable: false,
      contentBytes,
      windowBytes,
      minBytes: contentBytes ?? minBytes,
      maxBytes: contentBytes ?? maxBytes,
    });
  }
  return frames;
}

/**
 * The decompressed size of a zstd stream as its frame headers declare it:
 * the sum of every frame's content size.
 *
 * @returns undefined when a frame does not declare its size, or the bytes are
 * not a sequence of whole zstd frames.
 */
export function zstdDeclaredBytes(data: Uint8Array): number | undefined {
  let frames: ZstdFrame[];
  try {
    frames = zstdFrames(data, 'zstd');
  } catch (e) {
    if (e instanceof CorruptDataError) return undefined;
    throw e;
  }
  let total = 0;
  for (const f of frames) {
    if (f.contentBytes === undefined) return undefined;
    total += f.contentBytes;
  }
  return total;
}

const REFUSAL_FIX =
  'a zstd bomb, or a batch from a writer with a larger limit: raise maxBatchBytes to read it';

/**
 * Decompresses one or more zstd frames, with or without a declared content
 * size, into at most `maxBytes` bytes, refusing more before it allocates for
 * it:
 *
 * - When every frame declares its size, the sum is checked first, and libzstd
 *   (Node's, or a WebAssembly build) decompresses into exactly that much.
 * - Otherwise the sizes that block headers tell (raw and RLE blocks) are
 *   checked first, then libzstd decompresses into one buffer of at most
 *   `maxBytes` (less when the block headers allow less), which it refuses to
 *   overrun: decoding stops as soon as the output would pass the limit.
 *
 * A frame whose declared size differs from what it decompresses to is corrupt.
 *
 * @param what the object's location, for error messages
 * @param maxBytes the most bytes the output may have (inclusive)
 * @throws {CorruptDataError} when the bytes are not valid zstd, a declared
 * size is wrong, or the output would have more than `maxBytes` bytes.
 */
export async function zstdDecompress(
  data: Uint8Array,
  what: string,
  maxBytes: number,
): Promise<Uint8Array> {
  const frames = zstdFrames(data, what).filter((f) => !f.skippable);
  if (frames.length === 0) return new Uint8Array(0);
  let declared = 0;
  let leastBytes = 0;
  let mostBytes = 0;
  let sized = true;
  for (const f of frames) {
    if (f.contentBytes === undefined) sized = false;
    else declared += f.contentBytes;
    leastBytes += f.minBytes;
    mostBytes += f.maxBytes;
  }
  if (sized) {
    if (declared > maxBytes) {
      throw new CorruptDataError(
        `${what}: the record block's zstd frame headers declare ${declared} bytes, more than ${maxBytes} (maxBatchBytes); refusing it without decompressing (${REFUSAL_FIX})`,
        what,
      );
    }
    return decompressSized(data, frames, declared, maxBytes, what);
  }
  if (leastBytes > maxBytes) {
    throw new CorruptDataError(
      `${what}: the record block decompresses to at least ${leastBytes} bytes, more than ${maxBytes} (maxBatchBytes); refusing it without decompressing (${REFUSAL_FIX})`,
      what,
    );
  }
  // The output never needs more room than the block headers allow.
  const capacity = Math.min(mostBytes, maxBytes);
  if (capacity + EMPTY_UNSIZED_FRAME.byteLength + data.byteLength <= WASM_HEAP_BUDGET) {
    return decompressBounded(data, capacity, maxBytes, what);
  }
  return zstdDecompressStreaming(data, what, capacity, maxBytes);
}

/** Every frame declares its size, and their sum is within the limit. */
async function decompressSized(
  data: Uint8Array,
  frames: readonly ZstdFrame[],
  total: number,
  maxBytes: number,
  what: string,
): Promise<Uint8Array> {
  if (nodeZstd) {
    let out: Buffer;
    try {
      // libzstd checks each frame against its declared size; the cap stops a lying frame early.
      out = nodeZstd.zstdDecompressSync(data, { maxOutputLength: Math.max(1, total) });
    } catch (e) {
      throw new CorruptDataError(
        `${what}: the zstd record block does not decompress (corrupt, or a frame's content differs from its declared size): ${(e as Error).message}`,
        what,
        e,
      );
    }
    if (out.byteLength !== total) {
      throw new CorruptDataError(
        `${what}: the record block's zstd frames declare ${total} bytes but decompress to ${out.byteLength}`,
        what,
      );
    }
    return out;
  }
  if (total + data.byteLength > WASM_HEAP_BUDGET) {
    return zstdDecompressStreaming(data, what, total, maxBytes);
  }
  const { decompress } = await loadWasm();
  const decodeFrame = (i: number): Uint8Array => {
    const f = frames[i] as ZstdFrame;
    const declared = f.contentBytes as number;
    let part: Uint8Array;
    try {
      // The wasm build sizes its output from the frame header, and libzstd holds the frame to it.
      part = decompress(data.subarray(f.start, f.end));
    } catch (e) {
      const code = libzstdErrorCode(e);
      if (code === ZSTD_ERROR_DST_SIZE_TOO_SMALL) throw sizeMismatch(what, i, declared, 'more');
      throw new CorruptDataError(
        `${what}: zstd frame ${i} of the record block does not decompress: ${libzstdErrorText(e)}; or it holds fewer than the ${declared} bytes it declares`,
        what,
        e,
      );
    }
    if (part.byteLength !== declared) throw sizeMismatch(what, i, declared, part.byteLength);
    return part;
  };
  // The common case, a frame Spillway wrote, needs no copy.
  if (frames.length === 1) return decodeFrame(0);
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < frames.length; i++) {
    const part = decodeFrame(i);
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

function sizeMismatch(
  what: string,
  frame: number,
  declared: number,
  actual: number | 'more',
): CorruptDataError {
  return new CorruptDataError(
    `${what}: zstd frame ${frame} of the record block declares ${declared} bytes but decompresses to ${actual === 'more' ? 'more' : actual}${typeof actual === 'number' && actual > declared ? ' or more' : ''}`,
    what,
  );
}

/** Names of the libzstd errors a corrupt or hostile frame can cause. */
const LIBZSTD_ERRORS: Record<number, string> = {
  10: 'unknown frame type',
  14: 'unsupported frame parameter',
  16: 'window too large',
  20: 'corrupt data',
  22: 'wrong checksum',
  32: 'needs a dictionary',
  70: 'more output than there is room for',
};

/** The libzstd error code the WebAssembly build reports, negated, at the end of its message. */
function libzstdErrorCode(e: unknown): number | undefined {
  const m = /code -(\d+)$/.exec((e as Error).message);
  return m ? Number(m[1]) : undefined;
}

function libzstdErrorText(e: unknown): string {
  const code = libzstdErrorCode(e);
  if (code === undefined) return (e as Error).message;
  return `${LIBZSTD_ERRORS[code] ?? 'error'} (libzstd error ${code})`;
}

/**
 * Decompresses frame by frame with the pure-JS streaming decoder, copying each
 * block into one buffer of `capacity` bytes and keeping nothing else, so that
 * memory is the output plus one frame's window and the blocks not yet
 * collected. This is the path for blocks too large for the WebAssembly heap:
 * it is several times slower than libzstd, and its time grows with window
 * size times block count. Exported for its tests.
 *
 * @param capacity the most bytes the block headers allow, at most `maxBytes`
 * @param maxBytes the most bytes the output may have (inclusive)
 * @throws {CorruptDataError} as {@link zstdDecompress} does, and for a frame
 * whose window is larger than both `maxBytes` and 8 MiB.
 */
export async function zstdDecompressStreaming(
  data: Uint8Array,
  what: string,
  capacity: number,
  maxBytes: number,
): Promise<Uint8Array> {
  const frames = zstdFrames(data, what).filter((f) => !f.skippable);
  const windowLimit = Math.max(maxBytes, STREAMING_WINDOW_BYTES);
  for (const f of frames) {
    // The decoder allocates the window whole, before it decodes anything.
    if (f.windowBytes > windowLimit) {
      throw new CorruptDataError(
        `${what}: a zstd frame of the record block asks for a ${f.windowBytes}-byte window, more than ${windowLimit} (maxBatchBytes, or 8 MiB if larger); refusing it (${REFUSAL_FIX})`,
        what,
      );
    }
  }
  const { Decompress } = await import('fzstd');
  const out = new Uint8Array(capacity);
  let at = 0;
  try {
    for (const [i, f] of frames.entries()) {
      let frameBytes = 0;
      const decoder = new Decompress((chunk) => {
        frameBytes += chunk.byteLength;
        if (f.contentBytes !== undefined && frameBytes > f.contentBytes) {
          throw sizeMismatch(what, i, f.contentBytes, frameBytes);
        }
        if (at + chunk.byteLength > capacity) throw overrun(what, capacity, maxBytes);
        out.set(chunk, at);
        at += chunk.byteLength;
      });
      decoder.push(data.subarray(f.start, f.end), true);
      if (f.contentBytes !== undefined && frameBytes !== f.contentBytes) {
        throw sizeMismatch(what, i, f.contentBytes, frameBytes);
      }
    }
  } catch (e) {
    if (e instanceof CorruptDataError) throw e;
    throw new CorruptDataError(
      `${what}: the zstd record block does not decompress: ${(e as Error).message}`,
      what,
      e,
    );
  }
  if (at === capacity) return out;
  // Records are views into the block: do not let them pin a mostly empty buffer.
  return at < capacity / 2 ? out.slice(0, at) : out.subarray(0, at);
}

/** The output would pass `capacity`: over the limit, or beyond what the block headers allow. */
function overrun(
  what: string,
  capacity: number,
  maxBytes: number,
  cause?: unknown,
): CorruptDataError {
  return new CorruptDataError(
    capacity >= maxBytes
      ? `${what}: the record block decompresses to more than ${maxBytes} bytes (maxBatchBytes); refusing it (${REFUSAL_FIX})`
      : `${what}: the zstd record block decompresses to more than its frame and block headers allow (${capacity} bytes)`,
    what,
    cause,
  );
}

/**
 * Decompresses with libzstd into a buffer of `capacity` bytes, which it
 * refuses to overrun (its one-shot decoder also needs no window of its own).
 */
async function decompressBounded(
  data: Uint8Array,
  capacity: number,
  maxBytes: number,
  what: string,
): Promise<Uint8Array> {
  const input = new Uint8Array(EMPTY_UNSIZED_FRAME.byteLength + data.byteLength);
  input.set(EMPTY_UNSIZED_FRAME);
  input.set(data, EMPTY_UNSIZED_FRAME.byteLength);
  const { decompress } = await loadWasm();
  try {
    return decompress(input, { defaultHeapSize: capacity });
  } catch (e) {
    if (libzstdErrorCode(e) === ZSTD_ERROR_DST_SIZE_TOO_SMALL) {
      throw overrun(what, capacity, maxBytes, e);
    }
    throw new CorruptDataError(
      `${what}: the zstd record block does not decompress: ${libzstdErrorText(e)}; or a frame's content differs from its declared size`,
      what,
      e,
    );
  }
}

// Builders of zstd record blocks for the decompression-limit tests: batches
// around hand-edited frames, and bombs that decompress to far more than they
// weigh. None of them needs the memory its output would take.
import { zstdCompress } from '../../src/format/compression.ts';

export const MiB = 1024 * 1024;

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** A batch object around a stored zstd record block: the block, then the footer. */
export function zstdBatch(stored: Uint8Array, count = 1): Uint8Array {
  const out = new Uint8Array(stored.byteLength + 7);
  out.set(stored);
  const footer = new DataView(out.buffer, stored.byteLength);
  footer.setUint8(0, 1);
  footer.setUint32(1, count, true);
  footer.setUint16(5, 1, true);
  return out;
}

/** The record block of `records`: each as u32 length + bytes. */
export function recordBlock(records: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(records.reduce((n, r) => n + 4 + r.byteLength, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const r of records) {
    view.setUint32(at, r.byteLength, true);
    out.set(r, at + 4);
    at += 4 + r.byteLength;
  }
  return out;
}

/** `n` bytes of text that compress well, but into compressed blocks rather than RLE ones. */
export function text(n: number): Uint8Array {
  const out = new Uint8Array(n);
  let line = '';
  for (let i = 0, at = 0; at < n; i++) {
    line = `{"event":"click","user":${(i * 7919) % 100003},"at":${1712345678000 + i * 13}}\n`;
    for (let j = 0; j < line.length && at < n; j++) out[at++] = line.charCodeAt(j);
  }
  return out;
}

/** `frame` repeated `n` times. */
export function repeat(frame: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(frame.byteLength * n);
  for (let i = 0; i < n; i++) out.set(frame, i * frame.byteLength);
  return out;
}

/** The zstd window descriptor byte of a window of 2^`log` bytes. */
function windowDescriptor(log: number): number {
  return (log - 10) << 3;
}

/**
 * `frame` without its Frame_Content_Size: the flag cleared, the field dropped,
 * and a window descriptor of 2^`windowLog` bytes (by default the smallest
 * power of two that holds the content, which is all it may refer back to).
 */
export function withoutContentSize(frame: Uint8Array, windowLog?: number): Uint8Array {
  const descriptor = frame[4] as number;
  const singleSegment = (descriptor >> 5) & 1;
  const contentSizeFlag = descriptor >> 6;
  const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3] as number;
  const contentSizeBytes = contentSizeFlag === 0 ? singleSegment : 1 << contentSizeFlag;
  let at = 5;
  let window: number;
  if (singleSegment) {
    const view = new DataView(frame.buffer, frame.byteOffset + 5 + dictionaryIdBytes);
    const content =
      contentSizeBytes === 1
        ? view.getUint8(0)
        : contentSizeBytes === 2
          ? view.getUint16(0, true) + 256
          : view.getUint32(0, true);
    window = windowDescriptor(Math.max(10, Math.ceil(Math.log2(Math.max(1, content)))));
  } else {
    window = frame[at++] as number;
  }
  if (windowLog !== undefined) window = windowDescriptor(windowLog);
  const dictionaryId = frame.subarray(at, at + dictionaryIdBytes);
  const rest = frame.subarray(at + dictionaryIdBytes + contentSizeBytes);
  // Flags kept: checksum and dictionary ID; content size and single segment cleared.
  const header = [...ZSTD_MAGIC, descriptor & 0x1f, window, ...dictionaryId];
  const out = new Uint8Array(header.length + rest.byteLength);
  out.set(header);
  out.set(rest, header.length);
  return out;
}

/** A zstd frame of `content`, as Spillway writes it (declaring its size). */
export function sizedFrame(content: Uint8Array): Promise<Uint8Array> {
  return zstdCompress(content);
}

/**
 * 1 MiB of zeros as one frame declaring its size. Repeated 1024 times it is a
 * 1 GiB bomb of about 50 KB.
 */
export function zerosFrame(): Promise<Uint8Array> {
  return zstdCompress(new Uint8Array(MiB));
}

/**
 * A frame without a content size that decompresses to `bytes` zeros (a
 * multiple of 128 KiB): RLE blocks of 128 KiB, 4 bytes each. 1 GiB takes 32 KB.
 */
export function rleBombFrame(bytes: number): Uint8Array {
  const blocks = bytes / (128 * 1024);
  const out = new Uint8Array(6 + blocks * 4);
  out.set([...ZSTD_MAGIC, 0x00, windowDescriptor(17)]);
  for (let i = 0; i < blocks; i++) {
    const last = i === blocks - 1 ? 1 : 0;
    // Block header: last flag, type 1 (RLE), size 128 KiB; then the byte to repeat.
    const header = ((128 * 1024) << 3) | (1 << 1) | last;
    out.set([header & 0xff, (header >> 8) & 0xff, header >> 16, 0], 6 + i * 4);
  }
  return out;
}

/**
 * A frame without a content size of 1 MiB of zeros with a one every 128 KiB,
 * so that it is made of compressed blocks, whose sizes only decompressing
 * tells. Repeated 1024 times it is a 1 GiB bomb that the block headers cannot
 * refuse.
 */
export async function markedZerosFrame(windowLog = 20): Promise<Uint8Array> {
  const content = new Uint8Array(MiB);
  for (let i = 0; i < content.byteLength; i += 128 * 1024) content[i] = 1;
  return withoutContentSize(await zstdCompress(content), windowLog);
}

/**
 * A frame declaring `declared` bytes (any size up to 2^64) whose only block is
 * one RLE byte: refused, if the declared size is checked first, before a
 * decoder can find out that it lies.
 */
export function claimingFrame(declared: number): Uint8Array {
  const out = new Uint8Array(4 + 1 + 8 + 4);
  out.set(ZSTD_MAGIC);
  // Content size flag 3 (8 bytes), single segment.
  out[4] = 0xe0;
  const view = new DataView(out.buffer);
  view.setUint32(5, declared % 2 ** 32, true);
  view.setUint32(9, Math.floor(declared / 2 ** 32), true);
  // Last block, RLE, one byte.
  out.set([(1 << 3) | (1 << 1) | 1, 0, 0, 0], 13);
  return out;
}

/**
 * zstd decompressed as a stream with bounded memory: fzstd's streaming
 * decoder fed one block at a time, the blocks found by walking the frame and
 * block headers, which also refuses what the decoder cannot do safely.
 */
import { Decompress } from 'fzstd';
import type { ByteReader } from './file-bytes.ts';

/**
 * The largest zstd window accepted, which the decoder allocates whole: the
 * default limit of the `zstd` command's own decoder (`--long=27`).
 */
const ZSTD_MAX_WINDOW_BYTES = 128 * 1024 * 1024;
/** Block_Maximum_Size of the zstd format. */
const ZSTD_MAX_BLOCK_BYTES = 128 * 1024;

/**
 * zstd through fzstd's streaming decoder. The decoder decompresses whatever
 * complete blocks it is given at once, and one 64 KiB read of a hostile file
 * can hold thousands of blocks of 128 KiB each; so the input is cut after
 * every block (found by walking the frame and block headers) and handed over
 * one block per call, which bounds the output of a call to 128 KiB.
 */
export class ZstdReader implements ByteReader {
  private readonly walker = new ZstdWalker();
  private readonly decoder: Decompress;
  private readonly output: Buffer[] = [];
  private readonly input: AsyncGenerator<Buffer>;
  private pending: Buffer | undefined;
  private cuts: number[] = [];
  private cut = 0;
  private from = 0;
  private ended = false;

  /** @param input the compressed bytes, in order (a fresh buffer each, which is kept until decoded) */
  constructor(input: AsyncGenerator<Buffer>) {
    this.input = input;
    // A copy: the decoder reuses its window.
    this.decoder = new Decompress((data) => {
      if (data.length > 0) this.output.push(Buffer.from(data));
    });
  }

  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const out = this.output.shift();
      if (out !== undefined) return out;
      const pending = this.pending;
      if (pending !== undefined && this.cut < this.cuts.length) {
        const end = this.cuts[this.cut++] as number;
        this.decoder.push(pending.subarray(this.from, end));
        this.from = end;
        continue;
      }
      if (pending !== undefined && this.from < pending.length) {
        // The start of a block that the next read completes: the decoder keeps it.
        this.decoder.push(pending.subarray(this.from));
        this.from = pending.length;
        continue;
      }
      if (this.ended) return undefined;
      const r = await this.input.next();
      if (r.done) {
        this.ended = true;
        this.pending = undefined;
        this.walker.end();
        this.decoder.push(new Uint8Array(0), true);
        continue;
      }
      this.pending = r.value;
      this.cuts = this.walker.scan(r.value);
      this.cut = 0;
      this.from = 0;
    }
  }

  async close(): Promise<void> {
    await this.input.return(undefined);
  }
}

/**
 * Walks a zstd stream's frame and block headers as its bytes arrive, to find
 * where each block ends, and refuses what the decoder cannot do safely: a
 * window over 128 MiB (allocated up front), a dictionary, reserved values.
 */
class ZstdWalker {
  private state: 'frame' | 'block-header' | 'block' | 'checksum' | 'skip' = 'frame';
  /** Header bytes gathered so far (frame or block header). */
  private header: number[] = [];
  /** Bytes left in the current block, checksum or skippable frame. */
  private left = 0;
  private lastBlock = false;
  private checksum = false;
  /** Offset of the current frame in the stream, for messages. */
  private frameStart = 0;
  private offset = 0;

  /** Offsets in `data` just after each block that ends in it. @throws {Error} for bad headers. */
  scan(data: Uint8Array): number[] {
    const cuts: number[] = [];
    let i = 0;
    while (i < data.length) {
      if (this.state === 'block' || this.state === 'checksum' || this.state === 'skip') {
        const n = Math.min(this.left, data.length - i);
        i += n;
        this.left -= n;
        if (this.left > 0) break;
        if (this.state === 'block') {
          cuts.push(i);
          this.endBlock(this.offset + i);
        } else {
          this.startFrame(this.offset + i);
        }
        continue;
      }
      this.header.push(data[i++] as number);
      if (this.state === 'frame') this.frameHeader();
      else this.blockHeader(this.offset + i);
    }
    this.offset += data.length;
    return cuts;
  }

  /** The stream ended. @throws {Error} when it ends inside a frame. */
  end(): void {
    if (this.state !== 'frame' || this.header.length > 0) {
      throw new Error(`truncated: the stream ends inside the frame at byte ${this.frameStart}`);
    }
  }

  private startFrame(at: number): void {
    this.state = 'frame';
    this.header = [];
    this.frameStart = at;
  }

  private frameHeader(): void {
    const h = this.header;
    if (h.length < 4) return;
    const magic =
      ((h[0] as number) |
        ((h[1] as number) << 8) |
        ((h[2] as number) << 16) |
        ((h[3] as number) << 24)) >>>
      0;
    if (magic >>> 4 === 0x184d2a5) {
      if (h.length < 8) return;
      this.left =
        ((h[4] as number) |
          ((h[5] as number) << 8) |
          ((h[6] as number) << 16) |
          ((h[7] as number) << 24)) >>>
        0;
      this.state = 'skip';
      this.header = [];
      if (this.left === 0) this.startFrame(this.frameStart + 8);
      return;
    }
    if (magic !== 0xfd2fb528) {
      throw new Error(
        `no zstd frame at byte ${this.frameStart} (trailing garbage, or corrupt data)`,
      );
    }
    if (h.length < 5) return;
    const descriptor = h[4] as number;
    const contentSizeFlag = descriptor >> 6;
    const singleSegment = (descriptor >> 5) & 1;
    const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3] as number;
    const contentSizeBytes = contentSizeFlag === 0 ? singleSegment : 1 << contentSizeFlag;
    const length = 5 + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
    if (h.length < length) return;
    if (descriptor & 0x08)
      throw new Error(`the frame at byte ${this.frameStart} sets a reserved bit`);
    let at = 5;
    let window = 0;
    if (!singleSegment) {
      const w = h[at++] as number;
      const base = 2 ** (10 + (w >> 3));
      window = base + (base / 8) * (w & 7);
    }
    let dictionaryId = 0;
    for (let k = 0; k < dictionaryIdBytes; k++) dictionaryId += (h[at++] as number) * 2 ** (8 * k);
    let contentSize = 0;
    for (let k = 0; k < contentSizeBytes; k++) contentSize += (h[at++] as number) * 2 ** (8 * k);
    if (contentSizeBytes === 2) contentSize += 256;
    if (singleSegment) window = contentSize;
    if (dictionaryId !== 0) {
      throw new Error(
        `the frame at byte ${this.frameStart} needs a dictionary (id ${dictionaryId})`,
      );
    }
    if (window > ZSTD_MAX_WINDOW_BYTES) {
      throw new Error(
        `the frame at byte ${this.frameStart} asks for a ${window}-byte window, more than ${ZSTD_MAX_WINDOW_BYTES} (128 MiB, the zstd command's own default limit); recompress it without --long or --ultra`,
      );
    }
    this.checksum = ((descriptor >> 2) & 1) === 1;
    this.state = 'block-header';
    this.header = [];
  }

  /** @param at stream offset just after the header's last byte */
  private blockHeader(at: number): void {
    const h = this.header;
    if (h.length < 3) return;
    const value = (h[0] as number) | ((h[1] as number) << 8) | ((h[2] as number) << 16);
    this.header = [];
    this.lastBlock = (value & 1) === 1;
    const type = (value >> 1) & 3;
    const size = value >>> 3;
    if (type === 3)
      throw new Error(`a block of the frame at byte ${this.frameStart} has the reserved type 3`);
    if (size > ZSTD_MAX_BLOCK_BYTES) {
      throw new Error(
        `a block of the frame at byte ${this.frameStart} claims ${size} bytes, more than 128 KiB`,
      );
    }
    // An RLE block stores one byte, repeated `size` times.
    this.left = type === 1 ? 1 : size;
    this.state = 'block';
    if (this.left === 0) this.endBlock(at);
  }

  /** @param at stream offset just after the block */
  private endBlock(at: number): void {
    if (!this.lastBlock) {
      this.state = 'block-header';
    } else if (this.checksum) {
      this.state = 'checksum';
      this.left = 4;
    } else {
      this.startFrame(at);
    }
  }
}

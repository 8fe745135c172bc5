import { CorruptDataError } from '../errors.ts';

/**
 * A bounds-checked little-endian reader over a byte array. Every read past the
 * end, and every 64-bit value that a JS number cannot hold exactly, is a
 * {@link CorruptDataError} naming the object.
 */
export class ByteReader {
  private readonly view: DataView;
  offset: number;

  constructor(
    readonly bytes: Uint8Array,
    private readonly what: string,
    start = 0,
    private readonly end = bytes.byteLength,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = start;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  private need(n: number, field: string): void {
    if (this.offset + n > this.end) {
      throw new CorruptDataError(
        `${this.what}: truncated: ${field} needs ${n} bytes at offset ${this.offset}, only ${Math.max(0, this.end - this.offset)} remain`,
        this.what,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.view.getUint8(this.offset++);
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.view.getUint16(this.offset, true);
    this.offset += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }

  /** An unsigned 64-bit value; above 2^53 - 1 it is refused rather than rounded. */
  u64(field: string): number {
    this.need(8, field);
    // Two 32-bit halves: exact below 2^53, and much cheaper than a BigInt.
    const v =
      this.view.getUint32(this.offset + 4, true) * 2 ** 32 + this.view.getUint32(this.offset, true);
    if (!Number.isSafeInteger(v)) {
      throw new CorruptDataError(
        `${this.what}: ${field} is ${this.view.getBigUint64(this.offset, true)}, above 2^53 - 1, the largest value Spillway holds exactly`,
        this.what,
      );
    }
    this.offset += 8;
    return v;
  }

  /** A signed 64-bit value, refused outside ±(2^53 - 1). */
  i64(field: string): number {
    this.need(8, field);
    const v =
      this.view.getInt32(this.offset + 4, true) * 2 ** 32 + this.view.getUint32(this.offset, true);
    if (!Number.isSafeInteger(v)) {
      throw new CorruptDataError(
        `${this.what}: ${field} is ${this.view.getBigInt64(this.offset, true)}, outside ±(2^53 - 1)`,
        this.what,
      );
    }
    this.offset += 8;
    return v;
  }

  /** Moves past `n` bytes, checking they are there. */
  skip(n: number, field: string): void {
    this.need(n, field);
    this.offset += n;
  }

  bytesOf(n: number, field: string): Uint8Array {
    this.need(n, field);
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
}

/** A little-endian writer into a buffer of known size. */
export class ByteWriter {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  offset = 0;

  /** A writer over `size` new bytes, or over the bytes given. */
  constructor(size: number | Uint8Array) {
    this.bytes = typeof size === 'number' ? new Uint8Array(size) : size;
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  u8(v: number): void {
    this.view.setUint8(this.offset++, v);
  }

  u16(v: number): void {
    this.view.setUint16(this.offset, v, true);
    this.offset += 2;
  }

  u32(v: number): void {
    this.view.setUint32(this.offset, v, true);
    this.offset += 4;
  }

  u64(v: number): void {
    this.view.setUint32(this.offset, v % 2 ** 32, true);
    this.view.setUint32(this.offset + 4, Math.floor(v / 2 ** 32), true);
    this.offset += 8;
  }

  i64(v: number): void {
    if (v >= 0) {
      this.u64(v);
      return;
    }
    this.view.setBigInt64(this.offset, BigInt(v), true);
    this.offset += 8;
  }

  raw(b: Uint8Array): void {
    this.bytes.set(b, this.offset);
    this.offset += b.byteLength;
  }
}

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
    const v = this.view.getBigUint64(this.offset, true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CorruptDataError(
        `${this.what}: ${field} is ${v}, above 2^53 - 1, the largest value Spillway holds exactly`,
        this.what,
      );
    }
    return Number(v);
  }

  /** A signed 64-bit value, refused outside ±(2^53 - 1). */
  i64(field: string): number {
    this.need(8, field);
    const v = this.view.getBigInt64(this.offset, true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CorruptDataError(`${this.what}: ${field} is ${v}, outside ±(2^53 - 1)`, this.what);
    }
    return Number(v);
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

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
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
    this.view.setBigUint64(this.offset, BigInt(v), true);
    this.offset += 8;
  }

  i64(v: number): void {
    this.view.setBigInt64(this.offset, BigInt(v), true);
    this.offset += 8;
  }

  raw(b: Uint8Array): void {
    this.bytes.set(b, this.offset);
    this.offset += b.byteLength;
  }
}

import { randomBytes } from 'node:crypto';
import { InvalidArgumentError } from '../errors.ts';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const DECODE = new Map([...ALPHABET].map((c, i) => [c, i]));

/** True when `s` is a canonical 26-character Crockford base32 ULID. */
export function isUlid(s: string): boolean {
  return /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/.test(s);
}

/** The millisecond timestamp in a ULID's first 10 characters. */
export function ulidTimeMs(ulid: string): number {
  let t = 0;
  for (let i = 0; i < 10; i++) t = t * 32 + (DECODE.get(ulid[i] as string) ?? 0);
  return t;
}

/**
 * Makes ULIDs that sort in creation order even within one millisecond (the
 * random part is incremented instead of redrawn).
 */
export class UlidGenerator {
  private lastTime = -1;
  private lastRandom = new Uint8Array(10);

  /** A ULID for time `nowMs` (floored to a whole ms: a fraction has no character). */
  next(nowMs: number): string {
    nowMs = Math.floor(nowMs);
    if (nowMs <= this.lastTime) {
      increment(this.lastRandom);
    } else {
      this.lastTime = nowMs;
      this.lastRandom = new Uint8Array(randomBytes(10));
      this.lastRandom[0] = (this.lastRandom[0] as number) & 0x7f; // room to increment
    }
    let out = '';
    let t = this.lastTime;
    const time: string[] = [];
    for (let i = 0; i < 10; i++) {
      time.push(ALPHABET[t % 32] as string);
      t = Math.floor(t / 32);
    }
    out = time.reverse().join('');
    // 80 random bits as 16 base32 characters.
    let bits = 0;
    let value = 0;
    for (const byte of this.lastRandom) {
      value = (value << 8) | byte;
      bits += 8;
      while (bits >= 5) {
        bits -= 5;
        out += ALPHABET[(value >>> bits) & 31];
      }
      value &= (1 << bits) - 1;
    }
    return out;
  }
}

function increment(bytes: Uint8Array): void {
  for (let i = bytes.length - 1; i >= 0; i--) {
    const v = ((bytes[i] as number) + 1) & 0xff;
    bytes[i] = v;
    if (v !== 0) return;
  }
}

/**
 * A canonical ULID's 128 bits, big-endian (16 bytes): the binary form in
 * which the log layout stores group ids.
 *
 * @throws {InvalidArgumentError} for a string that is not a canonical ULID.
 */
export function ulidToBytes(ulid: string): Uint8Array {
  if (!isUlid(ulid))
    throw new InvalidArgumentError(`not a canonical ULID: ${JSON.stringify(ulid)}`);
  let v = 0n;
  for (const c of ulid) v = (v << 5n) | BigInt(DECODE.get(c) as number);
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** The canonical ULID of 16 bytes (big-endian), the inverse of {@link ulidToBytes}. */
export function ulidFromBytes(bytes: Uint8Array): string {
  let v = 0n;
  for (const b of bytes.subarray(0, 16)) v = (v << 8n) | BigInt(b);
  let out = '';
  for (let i = 0; i < 26; i++) {
    out = ALPHABET[Number(v & 31n)] + out;
    v >>= 5n;
  }
  return out;
}

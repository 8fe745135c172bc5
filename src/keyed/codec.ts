/**
 * How a keyed buffer turns values into bytes: to count them against
 * `maxBufferedBytes`, and (durable mode) to store them in the queue.
 */
import { InvalidArgumentError } from '../errors.ts';
import { describeValue } from '../store/keys.ts';

/**
 * Turns values of type `V` into bytes and back. `decode(encode(v))` must give
 * a value equal to `v` for the handler's purposes; durable mode hands
 * handlers decoded values.
 */
export interface Codec<V> {
  /** The value's bytes. May throw for a value it cannot encode (an `InvalidArgumentError` is best). */
  encode(value: V): Uint8Array;
  /** The value of bytes `encode` produced. */
  decode(bytes: Uint8Array): V;
}

/** Byte arrays as they are: the default codec. */
export const bytesCodec: Codec<Uint8Array> = Object.freeze({
  encode(value: Uint8Array): Uint8Array {
    if (!(value instanceof Uint8Array)) {
      throw new InvalidArgumentError(
        `a value must be a Uint8Array (or give a codec), got ${describeValue(value)}`,
      );
    }
    return value;
  },
  decode: (bytes: Uint8Array): Uint8Array => bytes,
});

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * Any JSON value as its UTF-8 JSON text.
 *
 * @throws {InvalidArgumentError} from `encode` for a value `JSON.stringify` refuses or turns into nothing (`undefined`, a function).
 */
export const jsonCodec: Codec<unknown> = Object.freeze({
  encode(value: unknown): Uint8Array {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new InvalidArgumentError(`jsonCodec: the value cannot be written as JSON`, e);
    }
    if (text === undefined) {
      throw new InvalidArgumentError(
        `jsonCodec: ${describeValue(value)} has no JSON form; pass a JSON value`,
      );
    }
    return utf8Encoder.encode(text);
  },
  decode: (bytes: Uint8Array): unknown => JSON.parse(utf8Decoder.decode(bytes)) as unknown,
});

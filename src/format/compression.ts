import zlib from 'node:zlib';
import type * as ZstdWasm from '@bokuweb/zstd-wasm';
import { CorruptDataError } from '../errors.ts';

/** Compression of a batch's record block. */
export type Compression = 'none' | 'zstd';

/** The zstd level Spillway writes, as the reference does. */
export const ZSTD_LEVEL = 3;

type NodeZstd = {
  zstdCompressSync(b: Uint8Array, o?: { params?: Record<number, number> }): Buffer;
  zstdDecompressSync(b: Uint8Array): Buffer;
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
 * it (22.15 and later), else a WebAssembly build of libzstd from npm.
 */
export async function zstdCompress(data: Uint8Array): Promise<Uint8Array> {
  if (nodeZstd) {
    return nodeZstd.zstdCompressSync(data, {
      params: { [nodeZstd.constants.ZSTD_c_compressionLevel as number]: ZSTD_LEVEL },
    });
  }
  return (await loadWasm()).compress(data, ZSTD_LEVEL);
}

/**
 * Decompresses one or more zstd frames, with or without a declared content
 * size. Falls back to a streaming pure-JS decoder for frames the WebAssembly
 * build cannot size.
 *
 * @throws {CorruptDataError} when the bytes are not valid zstd.
 */
export async function zstdDecompress(data: Uint8Array, what: string): Promise<Uint8Array> {
  try {
    if (nodeZstd) return nodeZstd.zstdDecompressSync(data);
    try {
      return (await loadWasm()).decompress(data);
    } catch {
      const { decompress } = await import('fzstd');
      return decompress(data);
    }
  } catch (e) {
    throw new CorruptDataError(
      `${what}: the zstd record block does not decompress: ${(e as Error).message}`,
      what,
      e,
    );
  }
}

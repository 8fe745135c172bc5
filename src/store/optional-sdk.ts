import { StorageError } from '../errors.ts';

/**
 * Loads a cloud SDK that Spillway lists as an optional dependency, on the
 * first call of its scheme. A user who omitted it (`npm install
 * --omit=optional`, or a bundle without it) gets one clear error naming the
 * package to install, code `DEPENDENCY_MISSING`, instead of a module
 * resolution stack.
 */
export async function loadOptionalSdk<T>(
  pkg: string,
  scheme: string,
  load: () => Promise<T>,
): Promise<T> {
  try {
    return await load();
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new StorageError(
        `${scheme}:// needs the package ${pkg}, which is not installed: run \`npm install ${pkg}\``,
        { code: 'DEPENDENCY_MISSING', retriable: false, cause: e },
      );
    }
    throw e;
  }
}

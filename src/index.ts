/**
 * Spillway: a durable ingestion buffer on object storage.
 *
 * @packageDocumentation
 */
export {
  SpillwayError,
  StorageError,
  NotFoundError,
  PreconditionFailedError,
  OutcomeUnknownError,
  CorruptDataError,
  InvalidArgumentError,
  FencedError,
  ClosedError,
  hasCode,
  type SpillwayErrorOptions,
} from './errors.ts';
export type {
  ObjectStore,
  ObjectVersion,
  ObjectMeta,
  GetOptions,
  GetResult,
  PutMode,
  PutOptions,
  PutResult,
  ByteRange,
  StoreCallOptions,
} from './store/object-store.ts';
export { openStore, resolveStore, type OpenStoreOptions } from './store/open-store.ts';
export { MemoryStore } from './store/memory-store.ts';
export { FileStore } from './store/file-store.ts';
export { S3Store, type S3StoreOptions } from './store/s3-store.ts';
export { AzureStore, type AzureStoreOptions } from './store/azure-store.ts';
export { PrefixStore } from './store/prefix-store.ts';
export {
  FaultInjectingStore,
  type FaultInjectingStoreOptions,
  type FaultStats,
  type RandomFaults,
  type StoreCall,
  type StoreHook,
  type StoreOperation,
} from './store/fault-injecting-store.ts';
export { RETRY_DEFAULTS, type RetryOptions } from './store/retry.ts';
export type { RemoteStoreOptions } from './store/remote-store.ts';

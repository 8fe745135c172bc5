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
  QueueNotFoundError,
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
export {
  Producer,
  PRODUCER_DEFAULTS,
  type ProducerOptions,
  type ProduceHandle,
  type DurableResult,
} from './producer.ts';
export {
  Consumer,
  CONSUMER_DEFAULTS,
  type ConsumerOptions,
  type Batch,
  type BatchDescriptor,
} from './consumer.ts';
export {
  GarbageCollector,
  GC_DEFAULTS,
  type GarbageCollectorOptions,
  type CollectionResult,
} from './gc.ts';
export { type Metrics, type MetricLabels, noopMetrics, InMemoryMetrics } from './metrics.ts';
export { type Clock, systemClock, ManualClock } from './clock.ts';
export type { Compression } from './format/compression.ts';
export type { MetadataItem } from './format/manifest.ts';

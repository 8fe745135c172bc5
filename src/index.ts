/**
 * Spillway: a durable ingestion buffer on object storage.
 *
 * The main entry point: queues, producers, consumers, the collector, the
 * stores. Test tools live in `spillway/testing`; codecs and other pieces the
 * command line and benchmarks use live in `spillway/internal`.
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
  DataLossError,
  TimeoutError,
  hasCode,
  type ErrorCode,
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
  StoreHints,
} from './store/object-store.ts';
export { openStore, resolveStore, type OpenStoreOptions } from './store/open-store.ts';
export { MemoryStore } from './store/memory-store.ts';
export { FileStore, type FileStoreOptions } from './store/file-store.ts';
export { LmdbStore } from './store/lmdb-store.ts';
export { S3Store, type S3StoreOptions } from './store/s3-store.ts';
export { AzureStore, type AzureStoreOptions } from './store/azure-store.ts';
export { GcsStore, type GcsStoreOptions } from './store/gcs-store.ts';
export { PrefixStore } from './store/prefix-store.ts';
export { RetryingStore, type RetryingStoreOptions } from './store/retrying-store.ts';
export {
  RateLimitedStore,
  TokenBucket,
  type RateLimitedStoreOptions,
} from './store/rate-limited-store.ts';
export {
  CountingStore,
  STORE_REQUEST_KINDS,
  type CountingStoreOptions,
  type StoreRequestKind,
} from './store/counting-store.ts';
export type { RemoteStoreOptions } from './store/remote-store.ts';
export { RETRY_DEFAULTS, type RetryPolicy } from './retry.ts';
export {
  Queue,
  QUEUE_DEFAULTS,
  type QueueOptions,
  type QueueSelector,
  type QueueStats,
  type PeekOptions,
  type Batch,
  type Layout,
} from './queue/queue.ts';
export type { StartAt } from './queue/log-queue.ts';
export type { SubscriptionInfo } from './queue/log-inspect.ts';
export type { Retention, Position } from './format/log-objects.ts';
export {
  Producer,
  PRODUCER_DEFAULTS,
  type ProducerOptions,
  type ProduceOptions,
  type ProduceHandle,
  type DurableResult,
} from './producer/producer.ts';
export {
  Consumer,
  CONSUMER_DEFAULTS,
  type ConsumerOptions,
  type CallOptions,
  type BatchDescriptor,
  type Delivery,
  type ProcessEndReason,
  type ProcessEntry,
  type ProcessHandler,
  type ProcessOptions,
  type ProcessOutcome,
  type ProcessResult,
} from './consumer/consumer.ts';
export {
  KeyedBuffer,
  KEYED_BUFFER_DEFAULTS,
  type KeyedBufferOptions,
  type DurableKeyedBufferOptions,
  type KeyedBufferStats,
  type FlushHandler,
  type FlushErrorHandler,
  type FlushInfo,
  type FlushReason,
} from './keyed/keyed-buffer.ts';
export type { KeyedQueueOptions } from './keyed/journal.ts';
export { bytesCodec, jsonCodec, type Codec } from './keyed/codec.ts';
export { MAX_KEY_BYTES, type Key } from './keyed/key.ts';
export type { Chunk } from './pusher/chunk.ts';
export {
  Pusher,
  SyncPusher,
  AsyncPusher,
  PUSHER_DEFAULTS,
  type PusherOptions,
  type AsyncPusherOptions,
  type ChunkAck,
} from './pusher/pusher.ts';
export type { SourceProgress } from './pusher/source-progress.ts';
export {
  IngestProgress,
  type IngestProgressOptions,
  type RecordedSource,
} from './pusher/ingest-progress.ts';
export { decodeChunkRecord, type ChunkRecord } from './pusher/chunk-metadata.ts';
export {
  GarbageCollector,
  GC_DEFAULTS,
  type GarbageCollectorOptions,
  type CollectionResult,
} from './gc.ts';
export { type Metrics, type MetricLabels, noopMetrics, InMemoryMetrics } from './metrics.ts';
export {
  PrometheusMetrics,
  PROMETHEUS_CONTENT_TYPE,
  type PrometheusMetricsOptions,
} from './metrics/prometheus.ts';
export {
  METRICS,
  metricDefinition,
  prometheusName,
  type MetricDefinition,
  type MetricType,
} from './metrics/registry.ts';
export { type Logger, type LogFields, silentLogger } from './logger.ts';
export { type Clock, type ClockTimer, type TimerOptions, systemClock } from './clock.ts';
export { DEFAULT_MAX_BATCH_BYTES } from './format/batch.ts';
export type { Compression } from './format/compression.ts';
export type { MetadataItem } from './format/manifest.ts';
export {
  ShardedQueue,
  type ShardedQueueOptions,
  type ShardedDescriptor,
} from './shard/sharded-queue.ts';
export {
  ShardedProducer,
  type ShardedProducerOptions,
  type ShardedProduceOptions,
  type ShardedProduceHandle,
  type ShardedDurableResult,
} from './shard/sharded-producer.ts';
export {
  ConsumerGroup,
  CONSUMER_GROUP_DEFAULTS,
  type ConsumerGroupOptions,
  type GroupBatch,
  type GroupMemberView,
  type VnodeConsumerOptions,
} from './shard/consumer-group.ts';
export {
  Deployment,
  type DeploymentConfig,
  type DeploymentOptions,
  type DeploymentShape,
  type BuildOptions,
  type BuiltDeployment,
} from './shard/deployment.ts';
export { vnodeOf, fnv1a32, parseVnodeList, type RoutingKey } from './shard/routing.ts';

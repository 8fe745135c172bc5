/**
 * `spillway/internal`: pieces the `spillway` command and the benchmarks use
 * that are not part of the supported API (codecs, the manifest queue, batch
 * fetching). They may change in any release.
 *
 * @packageDocumentation
 */
export {
  encodeBatch,
  decodeBatch,
  declaredBlockBytes,
  recordBlockBytes,
  BATCH_FOOTER_BYTES,
  type DecodedBatch,
} from './format/batch.ts';
export {
  encodeManifest,
  decodeManifest,
  emptyManifest,
  entryTrailer,
  type Manifest,
  type ManifestEntry,
} from './format/manifest.ts';
export { encodeTrailer, decodeTrailer, type IntegrityTrailer } from './format/trailer.ts';
export { crc32c } from './format/crc32c.ts';
export { UlidGenerator, isUlid, ulidTimeMs } from './format/ulid.ts';
export { ManifestQueue, type ManifestSnapshot, type NewEntry } from './queue/manifest-queue.ts';
export { describeEntry, fetchBatch, fetchBatchObject, hex } from './queue/batch-fetch.ts';
export { classifyBatchObject, oldestUlidTime } from './collection-rule.ts';
export { redactUrl, scrubSecrets } from './redact.ts';
export {
  encodeCommit,
  decodeCommit,
  commitKey,
  commitNumberOf,
  commitEnd,
  inlineLocation,
  parseInlineLocation,
  LOG_COMMIT_VERSION,
  type Commit,
  type CommitBatch,
} from './format/log-commit.ts';
export {
  encodeCursor,
  decodeCursor,
  encodeBoundary,
  decodeBoundary,
  encodeHeadHint,
  decodeHeadHint,
  encodeQueueDescriptor,
  decodeQueueDescriptor,
  type Cursor,
  type Boundary,
  type HeadHint,
  type QueueDescriptor,
} from './format/log-objects.ts';
export {
  LogQueue,
  LOG_MIN_COMMIT_AGE_MS,
  TRUSTED_VIEW_MS,
  DEFAULT_SUBSCRIPTION,
  headOf,
  isSubscriptionName,
  type AppendBatch,
  type Head,
} from './queue/log-queue.ts';
export { collectLog } from './log-collector.ts';

/**
 * `spillway/testing`: tools to test a pipeline built on Spillway without
 * sleeping and without a flaky network: a store that fails on purpose, a
 * clock moved by hand, a logger that records, and the invariant checker that
 * Spillway's own failure tests use.
 *
 * @packageDocumentation
 */
export {
  FaultInjectingStore,
  mulberry32,
  type FaultInjectingStoreOptions,
  type FaultStats,
  type RandomFaults,
  type StoreCall,
  type StoreHook,
  type StoreOperation,
} from './testing/fault-injecting-store.ts';
export { RetryingStore, type RetryingStoreOptions } from './store/retrying-store.ts';
export { ManualClock, skewedClock } from './clock.ts';
export { MemoryLogger } from './logger.ts';
export {
  checkInvariants,
  assertInvariants,
  entryBytes,
  entryId,
  VIOLATIONS,
  type ProducedCall,
  type ConsumerEvent,
  type EntryHandedOut,
  type EntryCommitted,
  type RunLog,
  type Deletion,
  type InvariantReport,
} from './testing/invariant-checker.ts';

/**
 * Where the real servers the tests use are, as `npm test` (scripts/run-tests.mjs)
 * started them. A suite whose server is missing fails with the reason: it never
 * passes silently.
 */
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { BlobServiceClient } from '@azure/storage-blob';
import { test } from 'node:test';

/** The S3 endpoint (Ceph RGW), or undefined with the reason it is missing. */
export function s3Endpoint(): string | undefined {
  return process.env.SPILLWAY_TEST_S3_ENDPOINT || undefined;
}

/** The Azure connection string (Azurite), or undefined. */
export function azureConnectionString(): string | undefined {
  return process.env.AZURE_STORAGE_CONNECTION_STRING || undefined;
}

/** Registers one failing test that says why a server-backed suite did not run. */
export function reportMissingServer(suite: string, server: string, how: string): void {
  const why = process.env[`SPILLWAY_TEST_${server.toUpperCase()}_ERROR`];
  test(`${suite}: the ${server} server is running`, () => {
    throw new Error(`${suite} did not run: no ${server} server${why ? ` (${why})` : ''}. ${how}`);
  });
}

/** A name unique to this run, for buckets, containers and prefixes. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Creates a bucket with a unique name on the S3 server at `endpoint`; returns its name. */
export async function createTestBucket(endpoint: string, prefix: string): Promise<string> {
  const bucket = uniqueName(prefix).toLowerCase().slice(0, 60);
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
  return bucket;
}

/** Deletes every object of a test bucket, then the bucket. */
export async function deleteTestBucket(endpoint: string, bucket: string): Promise<void> {
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true });
  try {
    for (;;) {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
      const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
      if (keys.length === 0) break;
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
    }
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
}

/** Creates a container with a unique name on the Azure server; returns its name. */
export async function createTestContainer(
  connectionString: string,
  prefix: string,
): Promise<string> {
  const container = uniqueName(prefix)
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 60);
  await BlobServiceClient.fromConnectionString(connectionString)
    .getContainerClient(container)
    .create();
  return container;
}

/** Deletes a test container and everything in it. */
export async function deleteTestContainer(
  connectionString: string,
  container: string,
): Promise<void> {
  await BlobServiceClient.fromConnectionString(connectionString)
    .getContainerClient(container)
    .deleteIfExists();
}

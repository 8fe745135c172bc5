import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Consumer, InvalidArgumentError, Producer } from '../../src/index.ts';
import { ConsumerGroup } from '../../src/shard/consumer-group.ts';
import { Deployment } from '../../src/shard/deployment.ts';
import { ShardedProducer } from '../../src/shard/sharded-producer.ts';

describe('Deployment', () => {
  test('three shapes, durable except in-process, from code, JSON and the environment', () => {
    assert.equal(Deployment.inProcess().isDurable, false);
    const local = Deployment.local('/var/lib/app/q', { instanceId: 'n1' });
    assert.equal(local.isDurable, true);
    assert.equal(local.store, 'file:///var/lib/app/q');
    const shared = Deployment.objectStore('s3://bucket/q', {
      instanceId: 'n1',
      vnodeCapacity: 32,
      vnodes: '0-7,12',
    });
    assert.deepEqual(shared.vnodes, [0, 1, 2, 3, 4, 5, 6, 7, 12]);
    assert.deepEqual(
      Deployment.fromJSON(JSON.stringify(shared.toJSON())).toJSON(),
      shared.toJSON(),
    );
    const env = Deployment.fromEnv({
      SPILLWAY_STORE: 's3://bucket/q',
      SPILLWAY_INSTANCE_ID: 'node-2',
      SPILLWAY_VNODE_CAPACITY: '32',
      SPILLWAY_VNODES: '8-15',
    });
    assert.equal(env.shape, 'object-store');
    assert.deepEqual(env.vnodes, [8, 9, 10, 11, 12, 13, 14, 15]);
    assert.equal(Deployment.fromEnv({ SPILLWAY_STORE: 'memory://x' }).shape, 'in-process');
    assert.equal(Deployment.fromEnv({ SPILLWAY_STORE: './data' }).shape, 'local');
    // The LMDB store is a local shape too, from code and from the environment.
    const lmdb = Deployment.local('lmdb:///var/lib/app/q', { instanceId: 'n1' });
    assert.equal(lmdb.shape, 'local');
    assert.equal(lmdb.store, 'lmdb:///var/lib/app/q');
    const fromEnv = Deployment.fromEnv({ SPILLWAY_STORE: 'lmdb:///var/lib/app/q' });
    assert.equal(fromEnv.shape, 'local');
    assert.equal(fromEnv.store, 'lmdb:///var/lib/app/q');
  });

  test('refuses with clear errors: no instance id or capacity for a shared store, vnodes outside the capacity, bad ranges, unknown fields', () => {
    const refuses = (f: () => unknown, re: RegExp): void =>
      assert.throws(f, (e: unknown) => e instanceof InvalidArgumentError && re.test(e.message));
    refuses(
      () => Deployment.fromEnv({ SPILLWAY_STORE: 's3://b/q', SPILLWAY_VNODE_CAPACITY: '8' }),
      /needs an instance id/,
    );
    refuses(
      () => Deployment.fromEnv({ SPILLWAY_STORE: 's3://b/q', SPILLWAY_INSTANCE_ID: 'a' }),
      /needs vnodeCapacity/,
    );
    refuses(
      () =>
        Deployment.fromEnv({
          SPILLWAY_STORE: 's3://b/q',
          SPILLWAY_INSTANCE_ID: 'a',
          SPILLWAY_VNODE_CAPACITY: '8',
          SPILLWAY_VNODES: '6-9',
        }),
      /SPILLWAY_VNODES: 8 is outside the vnode capacity/,
    );
    refuses(
      () => Deployment.fromEnv({ SPILLWAY_STORE: 's3://b/q', SPILLWAY_VNODE_CAPACITY: 'x' }),
      /SPILLWAY_VNODE_CAPACITY expects an integer/,
    );
    refuses(
      () =>
        Deployment.objectStore('s3://b/q', { instanceId: 'a', vnodeCapacity: 8, vnodes: '3-1' }),
      /runs backwards/,
    );
    refuses(
      () => Deployment.objectStore('memory://x', { instanceId: 'a', vnodeCapacity: 8 }),
      /cannot be shared/,
    );
    refuses(
      () => Deployment.fromJSON({ shape: 'local', store: '/x', vnodeCount: 3 } as never),
      /unknown field "vnodeCount"/,
    );
    refuses(() => Deployment.fromJSON({ shape: 'cloud' } as never), /shape must be one of/);
    refuses(() => Deployment.fromEnv({}), /SPILLWAY_STORE is not set/);
  });

  test('build() gives sharded roles for a vnode capacity, plain ones without, with the instance id on each', async () => {
    const sharded = Deployment.inProcess({
      instanceId: 'mem-1',
      vnodeCapacity: 4,
      leaseTtlMs: 1000,
    }).build();
    const producer = await sharded.producer();
    assert.ok(producer instanceof ShardedProducer);
    assert.equal(producer.instanceId, 'mem-1');
    await (
      await producer.produce('k', [new Uint8Array([1])])
    ).durable;
    const group = await sharded.consumer('g');
    assert.ok(group instanceof ConsumerGroup);
    assert.equal(group.instanceId, 'mem-1');
    assert.equal((await group.next())?.batch.entries.length, 1);
    await sharded.close();

    const dir = await mkdtemp(join(tmpdir(), 'spillway-deploy-'));
    try {
      const plain = Deployment.local(dir, { instanceId: 'disk-1' }).build();
      const p = await plain.producer();
      assert.ok(p instanceof Producer);
      await (
        await p.produce([new Uint8Array([2])])
      ).durable;
      const c = await plain.consumer('default');
      assert.ok(c instanceof Consumer);
      assert.equal((await c.next())?.entries.length, 1);
      await plain.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

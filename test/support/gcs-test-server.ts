/**
 * A small Google Cloud Storage JSON API server for tests: in-process, on
 * loopback, port 0. It is NOT Google Cloud Storage and was not checked against
 * it; it implements the part of the JSON API that `@google-cloud/storage` v7
 * calls for {@link GcsStore}, the way Google's documentation describes it, so
 * the shared conformance suite can run on the GCS adapter where no real GCS
 * server installs (fake-gcs-server has no npm or Debian package; the Firebase
 * emulator needs Java 21 and ignores generation preconditions).
 *
 * What it implements:
 * - objects.insert: `POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart|media&name=`
 *   (multipart/related: JSON metadata, then the bytes). A `crc32c` or
 *   `md5Hash` in the metadata is checked against the bytes (400 on a
 *   mismatch, nothing stored), as GCS does. `uploadType=resumable` is refused (501).
 * - objects.get: `GET /storage/v1/b/{bucket}/o/{object}` (the resource) and
 *   with `alt=media` (the bytes, with `x-goog-generation`,
 *   `x-goog-metageneration`, `x-goog-stored-content-length`,
 *   `x-goog-stored-content-encoding` and `x-goog-hash`); `Range: bytes=a-b`,
 *   `bytes=a-` and `bytes=-n` answer 206 with `Content-Range`, a range that
 *   starts at or past the end 416; `generation=` selects a generation (only
 *   the live one exists: no object versioning).
 * - objects.list: `GET /storage/v1/b/{bucket}/o?prefix=&delimiter=&maxResults=&pageToken=`,
 *   in UTF-8 byte order, at most 1000 per page, `nextPageToken` while more remain.
 * - objects.delete: `DELETE /storage/v1/b/{bucket}/o/{object}` (204; 404 when absent).
 * - buckets.insert/get/delete, for setting up tests.
 * - Preconditions on every object call: `ifGenerationMatch` (0: the object
 *   must not exist), `ifGenerationNotMatch`, `ifMetagenerationMatch`,
 *   `ifMetagenerationNotMatch`. A failed one is 412 `conditionNotMet`, except
 *   `ifGenerationNotMatch` / `ifMetagenerationNotMatch` on a read, which is
 *   304; a read of a missing object is 404 whatever the preconditions. A write
 *   is checked and applied in one turn of the event loop after its body has
 *   arrived, so conditional writes are atomic.
 * - Generations: a new one on every write, increasing (microseconds since the
 *   epoch, as GCS's look); metageneration 1.
 * - Errors in GCS's JSON shape: `{ error: { code, message, errors: [{ domain,
 *   reason, message }] } }`.
 *
 * Misbehaviour on purpose: {@link GcsTestServer.inject} answers the next
 * matching requests with a status (429, 503, ...) without applying them, or
 * applies a write and then drops the connection before answering (a lost
 * response), holds a request unanswered and unapplied (a stall), or flips a
 * byte of a download under its true hash (corruption in transit); {@link GcsTestServer.rateLimitObjectWrites} answers 429
 * `rateLimitExceeded` to a write to an object name that was written less than
 * a second ago, as GCS documents its per-object mutation limit.
 *
 * Not implemented: authentication (any Authorization header is accepted),
 * resumable uploads, compose, copy/rewrite, metadata patch, ACLs, object
 * versioning, gzip transcoding, XML API.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One stored object. */
interface StoredObject {
  bytes: Buffer;
  generation: bigint;
  metageneration: number;
  contentType: string;
  updated: Date;
  created: Date;
  crc32c: string;
  md5Hash: string;
}

/** Which requests a fault applies to. */
export interface FaultMatch {
  /** `write` (uploads), `read` (metadata or media), `media`, `list` or `delete`. */
  op: 'write' | 'read' | 'media' | 'list' | 'delete';
  /** Object name; any when omitted. */
  name?: string;
}

/** What to do with a matching request. */
export type FaultAction =
  /** Answer this status in GCS's error shape, without applying the request. */
  | { kind: 'status'; status: number; reason?: string }
  /** Apply the request, run `then` (if given), then drop the connection unanswered. */
  | { kind: 'lose-response'; then?: () => Promise<void> | void }
  /** Never answer and never apply (after reading the body); the client must time out. */
  | { kind: 'stall' }
  /** A media read only: send the bytes with one flipped, under the true `x-goog-hash`. */
  | { kind: 'corrupt' };

interface Fault extends FaultMatch {
  action: FaultAction;
  remaining: number;
}

let shared: Promise<GcsTestServer> | undefined;

/** One server per process, started on first use, for suites that only need buckets. */
export function sharedGcsTestServer(): Promise<GcsTestServer> {
  shared ??= GcsTestServer.start();
  return shared;
}

/** A running test server. */
export class GcsTestServer {
  private readonly buckets = new Map<string, Map<string, StoredObject>>();
  private readonly faults: Fault[] = [];
  private readonly lastWrite = new Map<string, number>();
  private lastGeneration = 0n;
  /** Requests seen, as `METHOD path?query`, for assertions. */
  readonly requests: string[] = [];
  /** The JSON metadata part of every multipart upload, by object name, for assertions. */
  readonly uploads: { name: string; metadata: Record<string, unknown> }[] = [];
  /** Writes refused with 429 by {@link rateLimitObjectWrites}. */
  rateLimited = 0;
  /** When true, a write to an object name written less than 1000 ms ago gets 429. */
  rateLimitObjectWrites = false;

  private constructor(
    private readonly server: http.Server,
    /** Base URL, e.g. `http://127.0.0.1:PORT`; the SDK's `apiEndpoint`. */
    readonly url: string,
  ) {}

  /** Starts a server on 127.0.0.1 and a free port. It does not keep the process alive. */
  static async start(): Promise<GcsTestServer> {
    const holder: { self?: GcsTestServer } = {};
    const server = http.createServer((req, res) => {
      void (holder.self as GcsTestServer).handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) sendError(res, 500, 'backendError', String(error));
        else res.destroy();
      });
    });
    // Idle keep-alive connections must not keep a test process alive.
    server.on('connection', (socket) => socket.unref());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    server.unref();
    const { port } = server.address() as AddressInfo;
    holder.self = new GcsTestServer(server, `http://127.0.0.1:${port}`);
    return holder.self;
  }

  /** Creates a bucket (idempotent). */
  createBucket(name: string): void {
    if (!this.buckets.has(name)) this.buckets.set(name, new Map());
  }

  /** Deletes a bucket and everything in it. */
  deleteBucket(name: string): void {
    this.buckets.delete(name);
  }

  /** Writes an object directly, as another client would; returns its generation. */
  putObject(bucket: string, name: string, bytes: Uint8Array): string {
    const objects = this.buckets.get(bucket);
    if (!objects) throw new Error(`no bucket ${bucket}`);
    return this.store(
      objects,
      name,
      Buffer.from(bytes),
      'application/octet-stream',
    ).generation.toString();
  }

  /** The stored bytes and generation of an object, or undefined. */
  object(bucket: string, name: string): { bytes: Buffer; generation: string } | undefined {
    const o = this.buckets.get(bucket)?.get(name);
    return o ? { bytes: o.bytes, generation: o.generation.toString() } : undefined;
  }

  /** Applies `action` to the next `count` requests that match. */
  inject(match: FaultMatch, action: FaultAction, count = 1): void {
    this.faults.push({ ...match, action, remaining: count });
  }

  /** Drops every injected fault not yet used. */
  clearFaults(): void {
    this.faults.length = 0;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private nextGeneration(): bigint {
    const now = BigInt(Date.now()) * 1000n;
    this.lastGeneration = now > this.lastGeneration ? now : this.lastGeneration + 1n;
    return this.lastGeneration;
  }

  private store(
    objects: Map<string, StoredObject>,
    name: string,
    bytes: Buffer,
    contentType: string,
  ): StoredObject {
    const now = new Date();
    const stored: StoredObject = {
      bytes,
      generation: this.nextGeneration(),
      metageneration: 1,
      contentType,
      created: now,
      updated: now,
      crc32c: crc32cBase64(bytes),
      md5Hash: createHash('md5').update(bytes).digest('base64'),
    };
    objects.set(name, stored);
    return stored;
  }

  private takeFault(op: FaultMatch['op'], name: string | undefined): FaultAction | undefined {
    const fault = this.faults.find(
      (f) =>
        f.remaining > 0 &&
        (f.op === op || (f.op === 'read' && op === 'media')) &&
        (f.name === undefined || f.name === name),
    );
    if (!fault) return undefined;
    fault.remaining--;
    return fault.action;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    const q = url.searchParams;
    const path = url.pathname;
    let m: RegExpExecArray | null;

    if ((m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(path)) && req.method === 'POST') {
      return this.insert(req, res, decodeURIComponent(m[1] as string), q);
    }
    if ((m = /^\/storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(path))) {
      const bucket = decodeURIComponent(m[1] as string);
      const name = decodeURIComponent(m[2] as string);
      if (req.method === 'GET') return this.get(req, res, bucket, name, q);
      if (req.method === 'DELETE') return this.delete(req, res, bucket, name, q);
    }
    if ((m = /^\/storage\/v1\/b\/([^/]+)\/o$/.exec(path)) && req.method === 'GET') {
      return this.list(req, res, decodeURIComponent(m[1] as string), q);
    }
    if (path === '/storage/v1/b' && req.method === 'POST') {
      const body = JSON.parse((await readBody(req)).toString('utf8') || '{}') as { name?: string };
      if (!body.name) return sendError(res, 400, 'required', 'Required: name');
      if (this.buckets.has(body.name)) {
        return sendError(
          res,
          409,
          'conflict',
          'Your previous request to create the named bucket succeeded and you already own it.',
        );
      }
      this.createBucket(body.name);
      return sendJson(res, 200, bucketResource(body.name));
    }
    if ((m = /^\/storage\/v1\/b\/([^/]+)$/.exec(path))) {
      const bucket = decodeURIComponent(m[1] as string);
      if (!this.buckets.has(bucket)) return bucketMissing(res);
      if (req.method === 'GET') return sendJson(res, 200, bucketResource(bucket));
      if (req.method === 'DELETE') {
        if ((this.buckets.get(bucket)?.size ?? 0) > 0) {
          return sendError(res, 409, 'conflict', 'The bucket you tried to delete is not empty.');
        }
        this.buckets.delete(bucket);
        res.writeHead(204).end();
        return;
      }
    }
    req.resume();
    sendError(res, 404, 'notFound', `Not Found: ${req.method} ${path}`);
  }

  private async insert(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    bucket: string,
    q: URLSearchParams,
  ): Promise<void> {
    const body = await readBody(req);
    const objects = this.buckets.get(bucket);
    if (!objects) return bucketMissing(res);
    const uploadType = q.get('uploadType');
    let metadata: { name?: string; contentType?: string; crc32c?: string; md5Hash?: string } = {};
    let bytes: Buffer;
    if (uploadType === 'media') {
      bytes = body;
    } else if (uploadType === 'multipart') {
      const parts = parseMultipartRelated(req.headers['content-type'], body);
      if (!parts || parts.length !== 2) {
        return sendError(res, 400, 'invalid', 'Invalid multipart request: expected two parts.');
      }
      try {
        metadata = JSON.parse((parts[0] as Buffer).toString('utf8')) as typeof metadata;
      } catch {
        return sendError(res, 400, 'parseError', 'Parse Error');
      }
      bytes = parts[1] as Buffer;
    } else {
      return sendError(
        res,
        uploadType === 'resumable' ? 501 : 400,
        'invalid',
        `uploadType ${uploadType ?? '(none)'} is not implemented by the test server`,
      );
    }
    const name = q.get('name') ?? metadata.name;
    if (!name) return sendError(res, 400, 'required', 'Required: name');
    if (uploadType === 'multipart') this.uploads.push({ name, metadata });
    const fault = this.takeFault('write', name);
    if (answeredByFault(res, fault)) return;
    if (this.rateLimitObjectWrites) {
      const last = this.lastWrite.get(`${bucket}/${name}`);
      if (last !== undefined && Date.now() - last < 1000) {
        this.rateLimited++;
        return sendError(
          res,
          429,
          'rateLimitExceeded',
          'The object exceeded the rate limit for object mutation operations (create, update, and delete). Please reduce your request rate.',
        );
      }
    }
    if (metadata.crc32c !== undefined && metadata.crc32c !== crc32cBase64(bytes)) {
      return sendError(
        res,
        400,
        'invalid',
        `Provided CRC32C "${metadata.crc32c}" doesn't match calculated CRC32C "${crc32cBase64(bytes)}".`,
      );
    }
    const md5 = createHash('md5').update(bytes).digest('base64');
    if (metadata.md5Hash !== undefined && metadata.md5Hash !== md5) {
      return sendError(
        res,
        400,
        'invalid',
        `Provided MD5 hash "${metadata.md5Hash}" doesn't match calculated MD5 hash "${md5}".`,
      );
    }
    const refused = checkPreconditions(objects.get(name), q, 'write');
    if (refused) return refused(res, bucket, name);
    const stored = this.store(
      objects,
      name,
      bytes,
      metadata.contentType ?? 'application/octet-stream',
    );
    this.lastWrite.set(`${bucket}/${name}`, Date.now());
    if (fault?.kind === 'lose-response') return this.lose(res, fault);
    sendJson(res, 200, objectResource(bucket, name, stored));
  }

  private async get(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    bucket: string,
    name: string,
    q: URLSearchParams,
  ): Promise<void> {
    req.resume();
    const objects = this.buckets.get(bucket);
    if (!objects) return bucketMissing(res);
    const media = q.get('alt') === 'media';
    const fault = this.takeFault(media ? 'media' : 'read', name);
    if (answeredByFault(res, fault)) return;
    let o = objects.get(name);
    const generation = q.get('generation');
    if (o && generation !== null && generation !== o.generation.toString()) o = undefined;
    if (!o) return objectMissing(res, bucket, name);
    const refused = checkPreconditions(o, q, 'read');
    if (refused) return refused(res, bucket, name);
    if (fault?.kind === 'lose-response') return this.lose(res, fault);
    if (!media) return sendJson(res, 200, objectResource(bucket, name, o));
    const size = o.bytes.byteLength;
    const headers: http.OutgoingHttpHeaders = {
      'content-type': o.contentType,
      'last-modified': o.updated.toUTCString(),
      etag: etagOf(o),
      'x-goog-generation': o.generation.toString(),
      'x-goog-metageneration': String(o.metageneration),
      'x-goog-stored-content-length': String(size),
      'x-goog-stored-content-encoding': 'identity',
      'x-goog-hash': `crc32c=${o.crc32c},md5=${o.md5Hash}`,
      'accept-ranges': 'bytes',
    };
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      res.writeHead(416, {
        'content-type': 'application/json; charset=utf-8',
        'content-range': `bytes */${size}`,
      });
      res.end(
        JSON.stringify(
          errorBody(416, 'requestedRangeNotSatisfiable', 'Request range not satisfiable'),
        ),
      );
      return;
    }
    if (range) {
      const slice = o.bytes.subarray(range.start, range.end + 1);
      res.writeHead(206, {
        ...headers,
        'content-length': String(slice.byteLength),
        'content-range': `bytes ${range.start}-${range.end}/${size}`,
      });
      res.end(slice);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': String(size) });
    if (fault?.kind === 'corrupt' && size > 0) {
      const bad = Buffer.from(o.bytes);
      bad[0] = (bad[0] as number) ^ 0xff;
      res.end(bad);
      return;
    }
    res.end(o.bytes);
  }

  private async delete(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    bucket: string,
    name: string,
    q: URLSearchParams,
  ): Promise<void> {
    req.resume();
    const objects = this.buckets.get(bucket);
    if (!objects) return bucketMissing(res);
    const fault = this.takeFault('delete', name);
    if (answeredByFault(res, fault)) return;
    const o = objects.get(name);
    if (!o) return objectMissing(res, bucket, name);
    const refused = checkPreconditions(o, q, 'write');
    if (refused) return refused(res, bucket, name);
    objects.delete(name);
    if (fault?.kind === 'lose-response') return this.lose(res, fault);
    res.writeHead(204).end();
  }

  private async list(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    bucket: string,
    q: URLSearchParams,
  ): Promise<void> {
    req.resume();
    const objects = this.buckets.get(bucket);
    if (!objects) return bucketMissing(res);
    const fault = this.takeFault('list', undefined);
    if (answeredByFault(res, fault)) return;
    const prefix = q.get('prefix') ?? '';
    const delimiter = q.get('delimiter') ?? '';
    const maxResults = Math.min(1000, Math.max(1, Number(q.get('maxResults') ?? 1000) || 1000));
    const after = q.get('pageToken')
      ? Buffer.from(q.get('pageToken') as string, 'base64url').toString('utf8')
      : undefined;
    const names = [...objects.keys()]
      .filter((n) => n.startsWith(prefix))
      .sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
    const items: object[] = [];
    const prefixes = new Set<string>();
    let last: string | undefined;
    let more = false;
    for (const n of names) {
      if (after !== undefined && Buffer.compare(Buffer.from(n), Buffer.from(after)) <= 0) continue;
      if (items.length + prefixes.size >= maxResults) {
        more = true;
        break;
      }
      const cut = delimiter ? n.indexOf(delimiter, prefix.length) : -1;
      if (cut >= 0) {
        const p = n.slice(0, cut + delimiter.length);
        if (!prefixes.has(p)) prefixes.add(p);
      } else {
        items.push(objectResource(bucket, n, objects.get(n) as StoredObject));
      }
      last = n;
    }
    sendJson(res, 200, {
      kind: 'storage#objects',
      ...(items.length > 0 ? { items } : {}),
      ...(prefixes.size > 0 ? { prefixes: [...prefixes] } : {}),
      ...(more && last !== undefined
        ? { nextPageToken: Buffer.from(last).toString('base64url') }
        : {}),
    });
  }

  private lose(res: http.ServerResponse, fault: FaultAction & { kind: 'lose-response' }): void {
    void (async () => {
      await fault.then?.();
      res.socket?.destroy();
    })();
  }
}

type Refusal = (res: http.ServerResponse, bucket: string, name: string) => void;

/**
 * GCS's precondition rules: ifGenerationMatch=0 holds only when there is no
 * live object; any other ifGenerationMatch, and any ifMetagenerationMatch,
 * fails on a missing object; the NotMatch forms fail when they match (304 on
 * reads, 412 on writes) and on a missing object (ifGenerationNotMatch=0: only
 * if a live object exists).
 */
function checkPreconditions(
  o: StoredObject | undefined,
  q: URLSearchParams,
  kind: 'read' | 'write',
): Refusal | undefined {
  const failed: Refusal = (res) =>
    sendError(
      res,
      412,
      'conditionNotMet',
      'At least one of the pre-conditions you specified did not hold.',
    );
  const notModified: Refusal = (res) => {
    res.writeHead(304).end();
  };
  const gm = q.get('ifGenerationMatch');
  if (gm !== null) {
    if (!/^\d+$/.test(gm)) return invalidPrecondition('ifGenerationMatch', gm);
    if (gm === '0' ? o !== undefined : o === undefined || o.generation !== BigInt(gm))
      return failed;
  }
  const mm = q.get('ifMetagenerationMatch');
  if (mm !== null) {
    if (!/^\d+$/.test(mm)) return invalidPrecondition('ifMetagenerationMatch', mm);
    if (o === undefined || String(o.metageneration) !== mm) return failed;
  }
  const gn = q.get('ifGenerationNotMatch');
  if (gn !== null) {
    if (!/^\d+$/.test(gn)) return invalidPrecondition('ifGenerationNotMatch', gn);
    // No live object fails it; 0 means "only if a live object exists".
    if (o === undefined || (gn !== '0' && o.generation === BigInt(gn))) {
      return kind === 'read' && o !== undefined ? notModified : failed;
    }
  }
  const mn = q.get('ifMetagenerationNotMatch');
  if (mn !== null) {
    if (!/^\d+$/.test(mn)) return invalidPrecondition('ifMetagenerationNotMatch', mn);
    if (o === undefined || String(o.metageneration) === mn)
      return kind === 'read' ? notModified : failed;
  }
  return undefined;
}

function invalidPrecondition(name: string, value: string): Refusal {
  return (res) => sendError(res, 400, 'invalid', `Invalid value for ${name}: ${value}`);
}

function objectResource(bucket: string, name: string, o: StoredObject): object {
  const encoded = encodeURIComponent(name);
  return {
    kind: 'storage#object',
    id: `${bucket}/${name}/${o.generation}`,
    selfLink: `/storage/v1/b/${bucket}/o/${encoded}`,
    mediaLink: `/download/storage/v1/b/${bucket}/o/${encoded}?generation=${o.generation}&alt=media`,
    name,
    bucket,
    generation: o.generation.toString(),
    metageneration: String(o.metageneration),
    contentType: o.contentType,
    storageClass: 'STANDARD',
    size: String(o.bytes.byteLength),
    md5Hash: o.md5Hash,
    crc32c: o.crc32c,
    etag: etagOf(o),
    timeCreated: o.created.toISOString(),
    updated: o.updated.toISOString(),
    timeStorageClassUpdated: o.created.toISOString(),
  };
}

function bucketResource(name: string): object {
  return {
    kind: 'storage#bucket',
    id: name,
    name,
    location: 'US',
    storageClass: 'STANDARD',
    metageneration: '1',
  };
}

function etagOf(o: StoredObject): string {
  return Buffer.from(`${o.generation}/${o.metageneration}`).toString('base64');
}

function errorBody(code: number, reason: string, message: string): object {
  return { error: { code, message, errors: [{ message, domain: 'global', reason }] } };
}

function sendJson(res: http.ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
  });
  res.end(text);
}

function sendError(
  res: http.ServerResponse,
  status: number,
  reason: string,
  message: string,
): void {
  sendJson(res, status, errorBody(status, reason, message));
}

function bucketMissing(res: http.ServerResponse): void {
  sendError(res, 404, 'notFound', 'The specified bucket does not exist.');
}

function objectMissing(res: http.ServerResponse, bucket: string, name: string): void {
  sendError(res, 404, 'notFound', `No such object: ${bucket}/${name}`);
}

/** Answers an injected status, or holds a stalled request; true when the request is taken care of. */
function answeredByFault(res: http.ServerResponse, fault: FaultAction | undefined): boolean {
  if (fault?.kind === 'status') {
    sendError(
      res,
      fault.status,
      fault.reason ?? reasonOf(fault.status),
      `injected ${fault.status}`,
    );
    return true;
  }
  return fault?.kind === 'stall';
}

function reasonOf(status: number): string {
  if (status === 429) return 'rateLimitExceeded';
  if (status === 503) return 'backendError';
  if (status === 412) return 'conditionNotMet';
  if (status === 404) return 'notFound';
  return status >= 500 ? 'backendError' : 'invalid';
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Splits a multipart/related body into the bodies of its parts. */
function parseMultipartRelated(
  contentType: string | undefined,
  body: Buffer,
): Buffer[] | undefined {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType ?? '')?.[1];
  if (!contentType?.toLowerCase().startsWith('multipart/related') || !boundary) return undefined;
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let at = body.indexOf(delimiter);
  while (at >= 0) {
    let start = at + delimiter.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    start = body.indexOf('\r\n\r\n', start);
    if (start < 0) return undefined;
    start += 4;
    const next = body.indexOf(delimiter, start);
    if (next < 0) return undefined;
    // The part ends with CRLF before the next delimiter.
    const end = body.subarray(next - 2, next).toString() === '\r\n' ? next - 2 : next;
    parts.push(body.subarray(start, end));
    at = next;
  }
  return parts;
}

/** `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`; undefined when absent or ignorable. */
function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = header ? /^bytes=(\d*)-(\d*)$/.exec(header.trim()) : null;
  if (!m) return undefined;
  const [, a, b] = m as unknown as [string, string, string];
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (start >= size) return 'unsatisfiable';
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (end < start) return undefined;
  return { start, end };
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[i] = c >>> 0;
  }
  return table;
})();

/** CRC32C (Castagnoli) of `bytes`, big-endian, base64: the form GCS uses. */
export function crc32cBase64(bytes: Uint8Array): string {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) {
    crc = (CRC32C_TABLE[(crc ^ (bytes[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  }
  const out = Buffer.alloc(4);
  out.writeUInt32BE((crc ^ 0xffffffff) >>> 0);
  return out.toString('base64');
}

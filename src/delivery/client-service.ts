// mimi.ds.v1.ClientService: the DS's interface to its own clients
// (registration and FanoutAuthToken, KeyPackage upload, the message queue).
// Every call carries a ClientAuth = SignWithLabel(client key, "ClientAuth",
// ClientAuthTBS{client_id, timestamp_ms, nonce, rpc_name, request_digest}),
// rpc_name being the full method path "mimi.ds.v1.ClientService/<Method>" and
// request_digest the SHA-256 of the call's other fields (src/client/local.ts,
// client-auth.ts). docs/security.md lists the limits applied here.
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { KeyObject } from "node:crypto";
import type { KeyPackage } from "ts-mls";
import { ciphersuites } from "ts-mls";
import { encodeKeyPackageTBS } from "ts-mls/keyPackage.js";
import { encodeLeafNodeTBS } from "ts-mls/leafNode.js";
import type { Logger } from "pino";
import { ClientService, type ClientAuth, type PublishKeyPackagesRequest } from "../../gen/mimi/ds/v1/client_pb.js";
import type { RateRule } from "../ds/rate-limit.js";
import { clientIdOf, engineCrypto, keyPackageRef, nonCanonicalClientId } from "../mls/index.js";
import { callTransport, requestContext } from "../server/context.js";
import { serviceRoute, type ServiceRoute } from "../server/server.js";
import { ConsumedKeyPackageError, DuplicateKeyPackageError, KeyPackageQuotaError, UnknownClientError } from "../store/errors.js";
import { clientQueue, type KeyPackageUpload, type Store } from "../store/port.js";
import { ClientInbox } from "./inbox.js";
import {
  WireDecodeError,
  decodeMLSMessage,
  encodeFanoutAuthToken,
  encodeKeyPackageBytes,
  isLastResort,
  readFanoutAuthToken,
  type ClientRequestFields,
} from "../wire/index.js";
import { ClientAuthVerifier, DEFAULT_MAX_CLOCK_SKEW_MS } from "./client-auth.js";
import { checkToken, loadLocalClient, withClientLock, type LocalClient } from "./clients.js";
import { mapped, rpcError } from "./errors.js";
import { DEFAULT_PAGE_BYTES, DEFAULT_PAGE_SIZE, streamQueue, type StreamBufferAccount } from "./queue-stream.js";
import { checkRegistrationCredential } from "./registration.js";
import { clientRpcNameOf, suiteNameOf, verifyLabeled } from "./suites.js";
import { encodeClientAuthData, issueToken, newClientAuthData, type FanoutTokenKeys } from "./tokens.js";

export { DEFAULT_MAX_CLOCK_SKEW_MS } from "./client-auth.js";
/** KeyPackages per PublishKeyPackages call. */
export const DEFAULT_MAX_KEY_PACKAGES_PER_CALL = 100;
/** Unexpired KeyPackages a client may keep (the last-resort ones not counted). */
export const DEFAULT_MAX_KEY_PACKAGES_PER_CLIENT = 500;
/** Open Receive streams per client; a newer one ends the oldest. */
export const DEFAULT_MAX_RECEIVE_STREAMS_PER_CLIENT = 4;
/** New registrations without a credential (open mode) per remote address. */
export const DEFAULT_REGISTRATION_RATE: RateRule = { limit: 30, windowMs: 3_600_000 };
/** How long a superseded stream may take to end by itself before its HTTP/2 stream is reset. */
const SUPERSEDE_GRACE_MS = 1_000;

/** Who may create a new client binding (docs/security.md, "Registration"). */
export interface RegistrationPolicy {
  /** Ed25519 issuer keys whose RegistrationCredentials the DS accepts. */
  readonly issuerKeys?: readonly KeyObject[];
  /**
   * Development mode: a new id is bound to the first key that asks (trust on
   * first use). A credential, when given, is still checked.
   */
  readonly open?: boolean;
}

export interface ClientServiceOptions {
  /** This DS's domain: only client ids of this domain are served. */
  readonly domain: string;
  readonly store: Store;
  readonly tokens: FanoutTokenKeys;
  readonly logger?: Logger;
  /** Clock in ms (tests). */
  readonly now?: () => number;
  readonly maxClockSkewMs?: number;
  readonly maxKeyPackagesPerCall?: number;
  readonly maxKeyPackagesPerClient?: number;
  /** Default: nobody can register (no issuer key, not open). */
  readonly registration?: RegistrationPolicy;
  /** New registrations without a credential (open mode) per remote address and window (store-backed, shared by instances). */
  readonly registrationRate?: RateRule;
  readonly maxReceiveStreamsPerClient?: number;
  /** Queue entries read per page by Receive (default 64). */
  readonly pageSize?: number;
  /** Payload bytes read per page by Receive (default 1 MiB; one larger entry is a page of its own). */
  readonly pageBytes?: number;
}

/** The Receive streams' own accounting (what the limits bound). */
export interface ReceiveStats {
  /** Open Receive streams. */
  readonly streams: number;
  /** Payload bytes read from the store and held by open streams now, and the most ever. */
  readonly bufferedBytes: number;
  readonly peakBufferedBytes: number;
  /** The most one stream ever held. */
  readonly peakStreamBytes: number;
  /** Streams ended because their client opened more than maxReceiveStreamsPerClient. */
  readonly superseded: number;
}

export interface ClientServiceHandle {
  /** For startServer's `services`. */
  readonly route: ServiceRoute;
  readonly impl: ServiceImpl<typeof ClientService>;
  stats(): ReceiveStats;
  /** Ends every open Receive stream with Unavailable (call before server.close()). */
  close(): void;
}

/** The rpc_name a ClientAuth must sign for `method` of ClientService. */
export const clientRpcName = clientRpcNameOf;

const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** One open Receive stream, for the per-client limit. */
interface OpenStream {
  readonly superseded: AbortController;
  readonly reset: () => void;
  ended: boolean;
}

export function createClientService(options: ClientServiceOptions): ClientServiceHandle {
  const { store, tokens } = options;
  const domain = options.domain.toLowerCase();
  const now = options.now ?? Date.now;
  const maxSkew = options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
  const maxPackages = options.maxKeyPackagesPerCall ?? DEFAULT_MAX_KEY_PACKAGES_PER_CALL;
  const maxStored = options.maxKeyPackagesPerClient ?? DEFAULT_MAX_KEY_PACKAGES_PER_CLIENT;
  const maxStreams = options.maxReceiveStreamsPerClient ?? DEFAULT_MAX_RECEIVE_STREAMS_PER_CLIENT;
  const registrationRate = options.registrationRate ?? DEFAULT_REGISTRATION_RATE;
  const issuerKeys = options.registration?.issuerKeys ?? [];
  const openRegistration = options.registration?.open === true;
  const verifier = new ClientAuthVerifier({ domain, store, now, maxClockSkewMs: maxSkew });
  const stop = new AbortController();

  const streams = new Map<string, OpenStream[]>();
  let buffered = 0;
  let peakBuffered = 0;
  let peakStream = 0;
  let superseded = 0;

  /** A registered client whose ClientAuth verifies, for these request fields, with its registered key. */
  async function authenticate(a: ClientAuth | undefined, fields: ClientRequestFields): Promise<{ clientId: string; client: LocalClient }> {
    const { clientId, auth } = verifier.precheck(a);
    const client = await loadLocalClient(store, clientId);
    if (client === undefined) throw new ConnectError(`client ${clientId} is not registered`, Code.NotFound);
    const suite = suiteNameOf(client.auth.cipherSuite);
    if (suite === undefined) throw new ConnectError("registered cipher suite is unknown", Code.Internal);
    await verifier.verify(auth, clientId, fields, suite, client.record.signaturePublicKey);
    return { clientId, client };
  }

  /** May this caller create the binding clientId -> key? Throws when not. */
  async function authorizeNewBinding(clientId: string, clientIdBytes: Uint8Array, key: Uint8Array, credential: Uint8Array, ctx: HandlerContext): Promise<void> {
    const why = nonCanonicalClientId(clientId, domain);
    if (why !== undefined) throw new ConnectError(`client id ${clientId} is not registered here: ${why}`, Code.InvalidArgument);
    if (credential.length > 0) {
      if (issuerKeys.length === 0) {
        throw new ConnectError("this DS has no registration key configured: it cannot check registration_credential", Code.FailedPrecondition);
      }
      const check = checkRegistrationCredential(credential, issuerKeys, clientIdBytes, key, now());
      if (!check.ok) throw new ConnectError(check.reason, Code.PermissionDenied);
      // The provider's identity system decided; it is the quota of credentialed registrations.
      return;
    }
    if (!openRegistration) {
      throw new ConnectError(
        issuerKeys.length > 0
          ? "a registration_credential from the provider is required to register a new client"
          : "registration is closed: this DS has no registration key configured (serve --registration-key)",
        Code.Unauthenticated,
      );
    }
    // Open registration: a quota per caller (remote address), since each binding is a row kept forever.
    const addr = requestContext(ctx).remoteAddress ?? "unknown";
    const r = await store.rateLimit(`register:addr:${addr}`, registrationRate, now());
    if (!r.allowed) {
      throw new ConnectError(
        `quota_exceeded: at most ${registrationRate.limit} new registrations per ${registrationRate.windowMs / 1000} s from one address`,
        Code.ResourceExhausted,
      );
    }
  }

  /** RFC 9420 checks of one uploaded KeyPackage, and its FanoutAuth token; the store upload. */
  async function validateKeyPackage(bytes: Uint8Array, what: string, clientId: string, client: LocalClient, lastResort: boolean): Promise<KeyPackageUpload> {
    const bad = (why: string, code: Code = Code.InvalidArgument): never => {
      throw new ConnectError(`${what}: ${why}`, code);
    };
    let kp: KeyPackage | undefined;
    try {
      const m = decodeMLSMessage(bytes);
      if (m.wireformat === "mls_key_package") kp = m.keyPackage;
    } catch (err) {
      if (err instanceof WireDecodeError) bad(`does not decode: ${err.message}`);
      throw err;
    }
    if (kp === undefined) return bad("not an MLSMessage of wire format mls_key_package");
    if (kp.version !== "mls10") bad(`protocol version ${kp.version} is not mls10`);
    const suite = kp.cipherSuite;
    const suiteId = ciphersuites[suite];
    const leaf = kp.leafNode;
    if (leaf.leafNodeSource !== "key_package") bad("leaf_node_source is not key_package");
    if (bytesEqual(kp.initKey, leaf.hpkePublicKey)) bad("init_key equals encryption_key");
    if (!(await verifyLabeled(suite, leaf.signaturePublicKey, "KeyPackageTBS", encodeKeyPackageTBS(kp), kp.signature))) {
      bad("KeyPackage signature does not verify");
    }
    if (!(await verifyLabeled(suite, leaf.signaturePublicKey, "LeafNodeTBS", encodeLeafNodeTBS(leaf), leaf.signature))) {
      bad("LeafNode signature does not verify");
    }
    const owner = clientIdOf(leaf.credential);
    if (owner !== clientId) bad(`credential names ${owner}, not ${clientId}`, Code.PermissionDenied);
    if (!bytesEqual(leaf.signaturePublicKey, client.record.signaturePublicKey)) {
      bad("signature key differs from the registered one", Code.PermissionDenied);
    }
    const nowS = BigInt(Math.floor(now() / 1000));
    const skewS = BigInt(Math.ceil(maxSkew / 1000));
    const { notBefore, notAfter } = leaf.lifetime;
    if (notAfter < nowS) bad(`lifetime ended at ${notAfter}`);
    if (notBefore > nowS + skewS) bad(`lifetime starts at ${notBefore}, in the future`);
    let token;
    let last: boolean;
    try {
      token = readFanoutAuthToken(kp.extensions);
      last = isLastResort(kp.extensions);
    } catch (err) {
      if (err instanceof WireDecodeError) return bad(`extensions: ${err.message}`);
      throw err;
    }
    if (token === undefined) bad("no FanoutAuth extension (0xF0A1)");
    if (checkToken(tokens, client, clientId, token!.token, now()) !== "ok") {
      bad("the FanoutAuthToken is not valid for this client", Code.PermissionDenied);
    }
    if (last !== lastResort) {
      bad(lastResort ? "a last-resort KeyPackage needs the last_resort extension" : "a last_resort KeyPackage belongs in last_resort_key_package");
    }
    const ms = notAfter * 1000n;
    return {
      ref: keyPackageRef(await engineCrypto(suite), kp),
      ciphersuite: suiteId,
      // The DS's key_packages operation hands out bare KeyPackages.
      keyPackage: encodeKeyPackageBytes(kp),
      expiresAt: ms > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(ms),
    };
  }

  /** Registers a new Receive stream of the client; the oldest beyond the limit is ended. */
  function openStream(clientId: string, reset: () => void): OpenStream {
    const mine: OpenStream = { superseded: new AbortController(), reset, ended: false };
    const list = streams.get(clientId) ?? [];
    list.push(mine);
    streams.set(clientId, list);
    while (list.length > maxStreams) {
      const oldest = list.shift()!;
      superseded++;
      oldest.superseded.abort();
      // A stream whose reader does not read is stuck in a write: only a reset ends it.
      setTimeout(() => {
        if (!oldest.ended) oldest.reset();
      }, SUPERSEDE_GRACE_MS).unref();
    }
    return mine;
  }

  function closeStream(clientId: string, s: OpenStream): void {
    s.ended = true;
    const list = streams.get(clientId);
    if (list === undefined) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) streams.delete(clientId);
  }

  const impl: ServiceImpl<typeof ClientService> = {
    register: (req, ctx) => mapped(async () => {
      const { clientId, auth } = verifier.precheck(req.auth);
      const suite = suiteNameOf(req.cipherSuite);
      if (suite === undefined) throw new ConnectError(`unknown cipher suite ${req.cipherSuite}`, Code.InvalidArgument);
      if (req.signaturePublicKey.length === 0) throw new ConnectError("signature_public_key is empty", Code.InvalidArgument);
      // Proof of possession: the ClientAuth is signed with the key being registered.
      await verifier.verify(
        auth,
        clientId,
        { method: "register", signaturePublicKey: req.signaturePublicKey, cipherSuite: req.cipherSuite, registrationCredential: req.registrationCredential },
        suite,
        req.signaturePublicKey,
      );
      const token = await withClientLock(clientId, async () => {
        const existing = await loadLocalClient(store, clientId);
        if (existing !== undefined) {
          // The id stays bound to its first key (an operator removes a binding).
          if (!bytesEqual(existing.record.signaturePublicKey, req.signaturePublicKey)) {
            throw new ConnectError(`client ${clientId} is registered with another signature key`, Code.PermissionDenied);
          }
          return issueToken(tokens, clientId, existing.auth, now());
        }
        await authorizeNewBinding(clientId, auth.clientId, req.signaturePublicKey, req.registrationCredential, ctx);
        const authData = newClientAuthData(req.cipherSuite, now());
        await store.apply({
          ops: [{ kind: "putClient", clientId, signaturePublicKey: req.signaturePublicKey, authData: encodeClientAuthData(authData) }],
        });
        options.logger?.info({ clientId, credential: req.registrationCredential.length > 0 }, "client registered");
        return issueToken(tokens, clientId, authData, now());
      });
      return { fanoutAuthToken: encodeFanoutAuthToken({ token }) };
    }),

    publishKeyPackages: (req: PublishKeyPackagesRequest) => mapped(async () => {
      const { clientId, client } = await authenticate(req.auth, {
        method: "publishKeyPackages",
        keyPackages: req.keyPackages,
        lastResortKeyPackage: req.lastResortKeyPackage,
      });
      if (req.keyPackages.length > maxPackages) {
        throw new ConnectError(`at most ${maxPackages} KeyPackages per call`, Code.InvalidArgument);
      }
      if (req.keyPackages.length === 0 && req.lastResortKeyPackage.length === 0) {
        throw new ConnectError("no KeyPackage given", Code.InvalidArgument);
      }
      const uploads: KeyPackageUpload[] = [];
      for (const [i, bytes] of req.keyPackages.entries()) {
        uploads.push(await validateKeyPackage(bytes, `key_packages[${i}]`, clientId, client, false));
      }
      const lastResort =
        req.lastResortKeyPackage.length > 0
          ? await validateKeyPackage(req.lastResortKeyPackage, "last_resort_key_package", clientId, client, true)
          : undefined;
      try {
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId, keyPackages: uploads, maxStored, ...(lastResort !== undefined ? { lastResort } : {}) }],
        });
      } catch (err) {
        if (err instanceof ConsumedKeyPackageError) {
          throw new ConnectError("a KeyPackage was already handed out: a consumed KeyPackage is never accepted again", Code.AlreadyExists);
        }
        if (err instanceof DuplicateKeyPackageError) throw new ConnectError("a KeyPackage is already stored", Code.AlreadyExists);
        if (err instanceof KeyPackageQuotaError) {
          throw new ConnectError(`quota_exceeded: a client keeps at most ${maxStored} KeyPackages`, Code.ResourceExhausted);
        }
        if (err instanceof UnknownClientError) throw new ConnectError(`client ${clientId} is not registered`, Code.NotFound);
        throw err;
      }
      return { stored: await store.countKeyPackages(clientId, undefined, now()) };
    }),

    async *receive(req, ctx: HandlerContext) {
      const { clientId } = await mapped(() => authenticate(req.auth, { method: "receive", resumeAfter: req.resumeAfter }));
      const transport = callTransport(ctx);
      const mine = openStream(clientId, () => transport?.reset());
      let streamPeak = 0;
      let streamHeld = 0;
      let delivered = 0;
      const account: StreamBufferAccount = {
        hold(n) {
          streamHeld += n;
          buffered += n;
          streamPeak = Math.max(streamPeak, streamHeld);
          peakStream = Math.max(peakStream, streamHeld);
          peakBuffered = Math.max(peakBuffered, buffered);
        },
        release(n) {
          streamHeld -= n;
          buffered -= n;
        },
      };
      const inbox = new ClientInbox(store, clientId);
      inbox.open();
      const entries = streamQueue(store, inbox.queue, req.resumeAfter, {
        signal: ctx.signal,
        stop: AbortSignal.any([stop.signal, mine.superseded.signal]),
        pageSize: options.pageSize ?? DEFAULT_PAGE_SIZE,
        pageBytes: options.pageBytes ?? DEFAULT_PAGE_BYTES,
        buffer: account,
        refill: inbox.refill,
        wait: inbox.wait,
      });
      try {
        for await (const e of entries) {
          delivered++;
          yield { sequence: e.seq, mlsMessage: e.payload };
        }
      } catch (err) {
        if (mine.superseded.signal.aborted && !stop.signal.aborted) {
          throw new ConnectError(
            `quota_exceeded: a newer Receive stream of this client replaced this one (at most ${maxStreams} per client)`,
            Code.ResourceExhausted,
          );
        }
        throw rpcError(err);
      } finally {
        inbox.close();
        closeStream(clientId, mine);
        options.logger?.debug({ clientId, delivered, peakBufferedBytes: streamPeak }, "receive stream ended");
      }
    },

    acknowledgeMessages: (req) => mapped(async () => {
      const { clientId } = await authenticate(req.auth, { method: "acknowledgeMessages", sequence: req.sequence });
      await store.ack(clientQueue(clientId), req.sequence);
      return {};
    }),
  };

  return {
    route: serviceRoute(ClientService, impl),
    impl,
    stats: () => ({
      streams: [...streams.values()].reduce((n, l) => n + l.length, 0),
      bufferedBytes: buffered,
      peakBufferedBytes: peakBuffered,
      peakStreamBytes: peakStream,
      superseded,
    }),
    close: () => stop.abort(),
  };
}

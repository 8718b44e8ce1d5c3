// mimi.ds.v1.ClientService: the DS's interface to its own clients
// (registration and FanoutAuthToken, KeyPackage upload, the message queue).
// Every call carries a ClientAuth = SignWithLabel(client key, "ClientAuth",
// ClientAuthTBS{client_id, timestamp_ms, rpc_name}), rpc_name being the full
// method path "mimi.ds.v1.ClientService/<Method>" (src/client/local.ts).
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { CiphersuiteName, KeyPackage } from "ts-mls";
import { ciphersuites } from "ts-mls";
import { encodeKeyPackageTBS } from "ts-mls/keyPackage.js";
import { encodeLeafNodeTBS } from "ts-mls/leafNode.js";
import type { Logger } from "pino";
import {
  type ClientAuth,
  ClientService,
  type PublishKeyPackagesRequest,
} from "../../gen/mimi/ds/v1/client_pb.js";
import { clientIdOf, domainOf, engineCrypto, keyPackageRef } from "../mls/index.js";
import { serviceRoute, type ServiceRoute } from "../server/server.js";
import { DuplicateKeyPackageError, UnknownClientError } from "../store/errors.js";
import { clientQueue, type KeyPackageUpload, type Store } from "../store/port.js";
import { ClientInbox } from "./inbox.js";
import {
  SignatureLabel,
  WireDecodeError,
  decodeMLSMessage,
  encodeClientAuthTBS,
  encodeFanoutAuthToken,
  encodeKeyPackageBytes,
  encodeSignContent,
  isLastResort,
  readFanoutAuthToken,
} from "../wire/index.js";
import { checkToken, loadLocalClient, withClientLock, type LocalClient } from "./clients.js";
import { mapped, rpcError } from "./errors.js";
import { DEFAULT_PAGE_SIZE, streamQueue } from "./queue-stream.js";
import { encodeClientAuthData, issueToken, newClientAuthData, type FanoutTokenKeys } from "./tokens.js";

/** How far a ClientAuth timestamp may be from our clock. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60_000;
/** KeyPackages per PublishKeyPackages call. */
export const DEFAULT_MAX_KEY_PACKAGES_PER_CALL = 100;

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
  /** Queue entries read per page by Receive (default 64). */
  readonly pageSize?: number;
}

export interface ClientServiceHandle {
  /** For startServer's `services`. */
  readonly route: ServiceRoute;
  readonly impl: ServiceImpl<typeof ClientService>;
  /** Ends every open Receive stream with Unavailable (call before server.close()). */
  close(): void;
}

/** The rpc_name a ClientAuth must sign for `method` of ClientService. */
export const clientRpcName = (method: keyof typeof ClientService.method): string =>
  `${ClientService.typeName}/${ClientService.method[method].name}`;

const utf8 = new TextDecoder("utf-8", { fatal: true });

function suiteNameOf(id: number): CiphersuiteName | undefined {
  for (const [name, n] of Object.entries(ciphersuites)) if (n === id) return name as CiphersuiteName;
  return undefined;
}

/** Verify SignWithLabel(label, content) with the signature scheme of `suite`. */
async function verifyLabeled(suite: CiphersuiteName, publicKey: Uint8Array, label: string, content: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const c = await engineCrypto(suite);
  const message = encodeSignContent(label, content);
  return c.verifySync !== undefined ? c.verifySync(publicKey, message, signature) : c.verify(publicKey, message, signature);
}

const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

export function createClientService(options: ClientServiceOptions): ClientServiceHandle {
  const { store, tokens } = options;
  const domain = options.domain.toLowerCase();
  const now = options.now ?? Date.now;
  const maxSkew = options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
  const maxPackages = options.maxKeyPackagesPerCall ?? DEFAULT_MAX_KEY_PACKAGES_PER_CALL;
  const stop = new AbortController();

  /** The ClientAuth's client id, checked for form, domain and freshness (not yet the signature). */
  function precheck(auth: ClientAuth | undefined): { clientId: string; auth: ClientAuth } {
    if (auth === undefined) throw new ConnectError("ClientAuth is required", Code.Unauthenticated);
    let clientId: string;
    try {
      clientId = utf8.decode(auth.clientId);
    } catch {
      throw new ConnectError("client_id is not UTF-8", Code.InvalidArgument);
    }
    if (clientId === "") throw new ConnectError("client_id is empty", Code.InvalidArgument);
    const d = domainOf(clientId);
    if (d !== domain) {
      throw new ConnectError(`client ${clientId} does not belong to ${domain}`, Code.PermissionDenied);
    }
    const skew = Math.abs(Number(auth.timestampMs) - now());
    if (!(skew <= maxSkew)) {
      throw new ConnectError(`ClientAuth timestamp is ${Math.round(skew / 1000)} s off (at most ${maxSkew / 1000} s)`, Code.Unauthenticated);
    }
    return { clientId, auth };
  }

  async function verifyAuth(auth: ClientAuth, clientId: string, method: keyof typeof ClientService.method, suite: CiphersuiteName, key: Uint8Array): Promise<void> {
    const tbs = encodeClientAuthTBS({ clientId: auth.clientId, timestampMs: auth.timestampMs, rpcName: clientRpcName(method) });
    if (!(await verifyLabeled(suite, key, SignatureLabel.ClientAuth, tbs, auth.signature))) {
      throw new ConnectError(`ClientAuth signature of ${clientId} does not verify`, Code.Unauthenticated);
    }
  }

  /** A registered client whose ClientAuth verifies with its registered key. */
  async function authenticate(a: ClientAuth | undefined, method: keyof typeof ClientService.method): Promise<{ clientId: string; client: LocalClient }> {
    const { clientId, auth } = precheck(a);
    const client = await loadLocalClient(store, clientId);
    if (client === undefined) throw new ConnectError(`client ${clientId} is not registered`, Code.NotFound);
    const suite = suiteNameOf(client.auth.cipherSuite);
    if (suite === undefined) throw new ConnectError("registered cipher suite is unknown", Code.Internal);
    await verifyAuth(auth, clientId, method, suite, client.record.signaturePublicKey);
    return { clientId, client };
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

  const impl: ServiceImpl<typeof ClientService> = {
    register: (req) => mapped(async () => {
      const { clientId, auth } = precheck(req.auth);
      const suite = suiteNameOf(req.cipherSuite);
      if (suite === undefined) throw new ConnectError(`unknown cipher suite ${req.cipherSuite}`, Code.InvalidArgument);
      if (req.signaturePublicKey.length === 0) throw new ConnectError("signature_public_key is empty", Code.InvalidArgument);
      // Proof of possession: the ClientAuth is signed with the key being registered.
      await verifyAuth(auth, clientId, "register", suite, req.signaturePublicKey);
      const token = await withClientLock(clientId, async () => {
        const existing = await loadLocalClient(store, clientId);
        if (existing !== undefined) {
          // Trust on first use: the id stays bound to its first key.
          if (!bytesEqual(existing.record.signaturePublicKey, req.signaturePublicKey)) {
            throw new ConnectError(`client ${clientId} is registered with another signature key`, Code.PermissionDenied);
          }
          return issueToken(tokens, clientId, existing.auth, now());
        }
        const authData = newClientAuthData(req.cipherSuite, now());
        await store.apply({
          ops: [{ kind: "putClient", clientId, signaturePublicKey: req.signaturePublicKey, authData: encodeClientAuthData(authData) }],
        });
        options.logger?.info({ clientId }, "client registered");
        return issueToken(tokens, clientId, authData, now());
      });
      return { fanoutAuthToken: encodeFanoutAuthToken({ token }) };
    }),

    publishKeyPackages: (req: PublishKeyPackagesRequest) => mapped(async () => {
      const { clientId, client } = await authenticate(req.auth, "publishKeyPackages");
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
          ops: [{ kind: "publishKeyPackages", clientId, keyPackages: uploads, ...(lastResort !== undefined ? { lastResort } : {}) }],
        });
      } catch (err) {
        if (err instanceof DuplicateKeyPackageError) throw new ConnectError("a KeyPackage is already stored", Code.AlreadyExists);
        if (err instanceof UnknownClientError) throw new ConnectError(`client ${clientId} is not registered`, Code.NotFound);
        throw err;
      }
      return { stored: await store.countKeyPackages(clientId, undefined, now()) };
    }),

    async *receive(req, ctx: HandlerContext) {
      const { clientId } = await mapped(() => authenticate(req.auth, "receive"));
      const inbox = new ClientInbox(store, clientId);
      inbox.open();
      const entries = streamQueue(store, inbox.queue, req.resumeAfter, {
        signal: ctx.signal,
        stop: stop.signal,
        pageSize: options.pageSize ?? DEFAULT_PAGE_SIZE,
        refill: inbox.refill,
        wait: inbox.wait,
      });
      try {
        for await (const e of entries) yield { sequence: e.seq, mlsMessage: e.payload };
      } catch (err) {
        throw rpcError(err);
      } finally {
        inbox.close();
      }
    },

    acknowledgeMessages: (req) => mapped(async () => {
      const { clientId } = await authenticate(req.auth, "acknowledgeMessages");
      await store.ack(clientQueue(clientId), req.sequence);
      return {};
    }),
  };

  return { route: serviceRoute(ClientService, impl), impl, close: () => stop.abort() };
}

// LocalClientApi: a client's calls to its own DS (mimi.ds.v1.ClientService):
// registration (FanoutAuthToken), KeyPackage upload and its message queue.
//
// Every call carries a ClientAuth {client_id, timestamp_ms, nonce, signature}
// where signature = SignWithLabel(client signature key, "ClientAuth",
// ClientAuthTBS {client_id, timestamp_ms, nonce, rpc_name, request_digest}).
// rpc_name is the *full* method name, "<package>.<Service>/<Method>", e.g.
// "mimi.ds.v1.ClientService/Receive" (clientAuthRpcName): the same string as
// the gRPC path without its leading '/', so a signature made for one RPC (or
// another service) cannot be replayed on another; request_digest binds the
// request's fields (sequence, resume point, KeyPackages, key). The DS bounds
// the timestamp's age and accepts each nonce once.
import type { DescMethod } from "@bufbuild/protobuf";
import { type Client, type Transport, createClient } from "@connectrpc/connect";
import { type ClientAuth, ClientService } from "../../gen/mimi/ds/v1/client_pb.js";
import type { CipherSuite, ClientRequestFields } from "../wire/index.js";
import type { CallOptions } from "./ds.js";
import { type SigningKey, clientRequestDigest, newClientAuthNonce, signClientAuth } from "./sign.js";

/** "mimi.ds.v1.ClientService/Receive" for the Receive method: the rpc_name of ClientAuthTBS. */
export function clientAuthRpcName(method: Pick<DescMethod, "name" | "parent">): string {
  return `${method.parent.typeName}/${method.name}`;
}

/** The rpc_name of each ClientService method. */
export const ClientRpcName = {
  register: clientAuthRpcName(ClientService.method.register),
  publishKeyPackages: clientAuthRpcName(ClientService.method.publishKeyPackages),
  receive: clientAuthRpcName(ClientService.method.receive),
  acknowledgeMessages: clientAuthRpcName(ClientService.method.acknowledgeMessages),
} as const;

export interface LocalIdentity extends SigningKey {
  /** The client identifier, e.g. mimi://example.com/u/alice/d/1 or alice:1@example.com. */
  readonly clientId: string;
}

export interface LocalClientOptions {
  /** Milliseconds since the Unix epoch; default Date.now. */
  readonly now?: () => number;
}

/** One entry of the client's queue. */
export interface QueuedMessage {
  readonly sequence: bigint;
  /** TLS-serialized MLSMessage (commit, proposal, Welcome or application message). */
  readonly mlsMessage: Uint8Array;
}

export class LocalClientApi {
  /** The generated ClientService client, for calls this class does not wrap. */
  readonly rpc: Client<typeof ClientService>;
  private readonly clientIdBytes: Uint8Array;
  private readonly now: () => number;

  constructor(
    transport: Transport,
    readonly identity: LocalIdentity,
    options: LocalClientOptions = {},
  ) {
    this.rpc = createClient(ClientService, transport);
    this.clientIdBytes = new TextEncoder().encode(identity.clientId);
    this.now = options.now ?? Date.now;
  }

  /**
   * A fresh ClientAuth for one call with these request fields (signed for the
   * method's rpc_name unless another is given).
   */
  async auth(fields: ClientRequestFields, rpcName: string = ClientRpcName[fields.method]): Promise<ClientAuth> {
    const timestampMs = BigInt(this.now());
    const nonce = newClientAuthNonce();
    const requestDigest = await clientRequestDigest(fields);
    const signature = await signClientAuth({ clientId: this.clientIdBytes, timestampMs, nonce, rpcName, requestDigest }, this.identity);
    return { $typeName: "mimi.ds.v1.ClientAuth", clientId: this.clientIdBytes, timestampMs, nonce, signature };
  }

  /**
   * Binds the client id to `signaturePublicKey` (the ClientAuth is made with
   * its private half) and returns the TLS-serialized FanoutAuthToken. A new
   * binding needs the provider's `registrationCredential` (TLS-serialized
   * RegistrationCredential) unless the DS allows open registration.
   */
  async register(
    signaturePublicKey: Uint8Array,
    cipherSuite: CipherSuite,
    opts?: CallOptions & { readonly registrationCredential?: Uint8Array },
  ): Promise<Uint8Array> {
    const registrationCredential = opts?.registrationCredential ?? new Uint8Array();
    const auth = await this.auth({ method: "register", signaturePublicKey, cipherSuite, registrationCredential });
    const res = await this.rpc.register({ auth, signaturePublicKey, cipherSuite, registrationCredential }, opts);
    return res.fanoutAuthToken;
  }

  /**
   * Uploads KeyPackages (TLS-serialized MLSMessages of wire format
   * mls_key_package) and optionally a last-resort one; returns how many
   * ordinary packages the DS now holds.
   */
  async publishKeyPackages(
    keyPackages: readonly Uint8Array[],
    lastResort?: Uint8Array,
    opts?: CallOptions,
  ): Promise<number> {
    const lastResortKeyPackage = lastResort ?? new Uint8Array();
    const auth = await this.auth({ method: "publishKeyPackages", keyPackages, lastResortKeyPackage });
    const res = await this.rpc.publishKeyPackages({ auth, keyPackages: [...keyPackages], lastResortKeyPackage }, opts);
    return res.stored;
  }

  /**
   * The queue from `resumeAfter` on, as a stream that stays open for new
   * entries until `signal` aborts (then the iteration ends with the
   * ConnectError Canceled) or the server ends it.
   */
  async *receive(resumeAfter: bigint, signal?: AbortSignal): AsyncIterable<QueuedMessage> {
    const auth = await this.auth({ method: "receive", resumeAfter });
    const stream = this.rpc.receive({ auth, resumeAfter }, signal !== undefined ? { signal } : {});
    for await (const m of stream) yield { sequence: m.sequence, mlsMessage: m.mlsMessage };
  }

  /** Acknowledges every queue entry up to and including `sequence`. */
  async acknowledge(sequence: bigint, opts?: CallOptions): Promise<void> {
    const auth = await this.auth({ method: "acknowledgeMessages", sequence });
    await this.rpc.acknowledgeMessages({ auth, sequence }, opts);
  }
}

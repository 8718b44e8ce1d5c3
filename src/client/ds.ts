// DSClient: typed DSRequests over mimi.ds.v1.HubService/Submit. Each call
// builds the DSRequestBody, authenticates it (src/client/sign.ts), encodes it
// with src/wire, submits it and decodes the DSResponse; a DS error becomes a
// DSRequestError, also when it arrives as a failed RPC with a DSErrorDetail.
import { type Client, ConnectError, type Transport, createClient } from "@connectrpc/connect";
import type { ExternalSender, KeyPackage, MLSMessage, RatchetTree } from "ts-mls";
import { DSErrorDetailSchema, HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import {
  type AddClientsRequest,
  type CipherSuite,
  type CreateGroupRequest,
  type DSProtocolVersion,
  type DSRequestBody,
  type DSResponse,
  type DSResponseBody,
  type DSResponseTypeName,
  type DecodeLimits,
  type FanoutAuthToken,
  type MLSGroupUpdate,
  type WelcomeInfoRequest,
  DS_PROTOCOL_VERSION,
  WireDecodeError,
  decodeDSResponse,
  decodeWith,
  encodeDSRequest,
  externalSenderCodec,
} from "../wire/index.js";
import { DSRequestError, UnexpectedResponseError } from "./errors.js";
import { type RequestAuth, anonymous, buildDSRequest } from "./sign.js";

/** Per-call options. */
export interface CallOptions {
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
  readonly headers?: Record<string, string>;
}

export interface DSClientOptions {
  /** DSProtocolVersion written into requests; default 1. */
  readonly version?: DSProtocolVersion;
  /** Limits for decoding DSResponses. */
  readonly limits?: Partial<DecodeLimits>;
}

type BodyOf<T extends DSResponseTypeName> = Extract<DSResponseBody, { responseType: T }>;

export interface ExternalCommitInfo {
  /** MLSMessage of wire format mls_group_info. */
  readonly groupInfo: MLSMessage;
  readonly ratchetTree: RatchetTree;
}

/** HubService/HubInfo, decoded: what a group creator puts into its group for this hub. */
export interface HubInfo {
  /** The DS domain of the hub. */
  readonly domain: string;
  /** The hub's entry for the group's `external_senders` (RFC 9420 12.1.8.1). */
  readonly externalSender: ExternalSender;
  /** The same entry as the hub sent it (TLS-serialized ExternalSender). */
  readonly externalSenderBytes: Uint8Array;
  /** MIMI DS protocol versions the hub speaks. */
  readonly protocolVersions: readonly number[];
  /** Ed25519 public key that verifies the hub's DSFanoutRequests. */
  readonly fanoutSignatureKey: Uint8Array;
}

export class DSClient {
  /** The generated HubService client, for calls this class does not wrap. */
  readonly hub: Client<typeof HubService>;
  private readonly version: DSProtocolVersion;
  private readonly limits: Partial<DecodeLimits> | undefined;

  constructor(transport: Transport, options: DSClientOptions = {}) {
    this.hub = createClient(HubService, transport);
    this.version = options.version ?? DS_PROTOCOL_VERSION;
    this.limits = options.limits;
  }

  /** HubService/Ping: the DS domain the server speaks for. */
  async ping(opts?: CallOptions): Promise<string> {
    const res = await this.hub.ping({}, opts);
    return res.domain;
  }

  /**
   * HubService/HubInfo for an MLS cipher suite (number, e.g. 1): the hub's
   * ExternalSender decoded; undecodable bytes are an UnexpectedResponseError.
   */
  async hubInfo(cipherSuite: CipherSuite, opts?: CallOptions): Promise<HubInfo> {
    const res = await this.hub.hubInfo({ cipherSuite }, opts);
    let externalSender: ExternalSender;
    try {
      externalSender = decodeWith(externalSenderCodec, res.externalSender, "ExternalSender", this.limits);
    } catch (err) {
      if (err instanceof WireDecodeError) throw new UnexpectedResponseError(`undecodable ExternalSender in HubInfo: ${err.message}`);
      throw err;
    }
    return {
      domain: res.domain,
      externalSender,
      externalSenderBytes: res.externalSender,
      protocolVersions: [...res.protocolVersions],
      fanoutSignatureKey: res.fanoutSignatureKey,
    };
  }

  /**
   * Raw Submit: DSRequest bytes in, DSResponse bytes out. A DS error comes back
   * as its DSResponse bytes (taken from the RPC's DSErrorDetail); RPC failures
   * without one (transport, deadline, Internal) are thrown as ConnectError.
   */
  async submit(dsRequest: Uint8Array, opts?: CallOptions): Promise<Uint8Array> {
    try {
      const res = await this.hub.submit({ dsRequest }, opts);
      return res.dsResponse;
    } catch (err) {
      if (err instanceof ConnectError) {
        const detail = err.findDetails(DSErrorDetailSchema)[0];
        if (detail !== undefined) return detail.dsResponse;
      }
      throw err;
    }
  }

  /** Signs, submits and decodes one request; throws DSRequestError for an error response. */
  async request(body: DSRequestBody, auth: RequestAuth, opts?: CallOptions): Promise<DSResponseBody> {
    const req = await buildDSRequest(body, auth, this.version);
    let bytes: Uint8Array;
    try {
      bytes = (await this.hub.submit({ dsRequest: encodeDSRequest(req) }, opts)).dsResponse;
    } catch (err) {
      if (err instanceof ConnectError) throw DSRequestError.fromConnectError(err) ?? err;
      throw err;
    }
    let response: DSResponse;
    try {
      response = decodeDSResponse(bytes, this.limits);
    } catch (err) {
      if (err instanceof WireDecodeError) throw new UnexpectedResponseError(`undecodable DSResponse: ${err.message}`);
      throw err;
    }
    if (response.responseBody.responseType === "error") throw new DSRequestError(response.responseBody.error);
    return response.responseBody;
  }

  private async expect<T extends DSResponseTypeName>(
    expected: T,
    body: DSRequestBody,
    auth: RequestAuth,
    opts?: CallOptions,
  ): Promise<BodyOf<T>> {
    const res = await this.request(body, auth, opts);
    if (res.responseType !== expected) {
      throw new UnexpectedResponseError(
        `${body.requestType} answered with ${res.responseType}, expected ${expected}`,
        expected,
        res.responseType,
      );
    }
    return res as BodyOf<T>;
  }

  private async ok(body: DSRequestBody, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    await this.expect("ok", body, auth, opts);
  }

  // ------------------------------------------------------------ operations

  /** request_group_id (anonymous by default): a fresh group id reserved on this hub. */
  async requestGroupId(auth: RequestAuth = anonymous, opts?: CallOptions): Promise<Uint8Array> {
    const res = await this.expect(
      "group_id",
      { requestType: "request_group_id", requestGroupIdRequest: {} },
      auth,
      opts,
    );
    return res.groupId;
  }

  /** create_group, signed by the creator (sender_index 0 of the group it creates). */
  createGroup(request: CreateGroupRequest, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "create_group", createGroupRequest: request }, auth, opts);
  }

  deleteGroup(groupUpdate: MLSGroupUpdate, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "delete_group", deleteGroupRequest: { groupUpdate } }, auth, opts);
  }

  addClients(request: AddClientsRequest, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "add_clients", addClientsRequest: request }, auth, opts);
  }

  removeClients(groupUpdate: MLSGroupUpdate, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "remove_clients", removeClientsRequest: { groupUpdate } }, auth, opts);
  }

  /** self_remove_client: `proposal` is a PublicMessage Remove (of the sender's own leaf) or SelfRemove. */
  selfRemoveClient(proposal: MLSMessage, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "self_remove_client", selfRemoveClientRequest: { proposal } }, auth, opts);
  }

  /** update_client, optionally replacing the sender's FanoutAuthToken. */
  updateClient(
    groupUpdate: MLSGroupUpdate,
    token: FanoutAuthToken | undefined,
    auth: RequestAuth,
    opts?: CallOptions,
  ): Promise<void> {
    const updateClientRequest = token === undefined ? { groupUpdate } : { groupUpdate, token };
    return this.ok({ requestType: "update_client", updateClientRequest }, auth, opts);
  }

  /**
   * external_join. Anonymous by default: the joiner is not in the tree yet,
   * and its external commit is signed by the key of its new leaf anyway.
   */
  externalJoin(groupUpdate: MLSGroupUpdate, auth: RequestAuth = anonymous, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "external_join", externalJoinRequest: { groupUpdate } }, auth, opts);
  }

  /** send_message: a PrivateMessage application message. */
  sendMessage(applicationMessage: MLSMessage, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "send_message", sendMessageRequest: { applicationMessage } }, auth, opts);
  }

  /** key_packages (anonymous by default): one KeyPackage per client; empty `cipherSuites` = any. */
  async keyPackages(
    clientIdentifiers: readonly string[],
    cipherSuites: readonly CipherSuite[] = [],
    auth: RequestAuth = anonymous,
    opts?: CallOptions,
  ): Promise<readonly KeyPackage[]> {
    const enc = new TextEncoder();
    const res = await this.expect(
      "key_packages",
      {
        requestType: "key_packages",
        keyPackagesRequest: { clientIdentifiers: clientIdentifiers.map((c) => enc.encode(c)), cipherSuites },
      },
      auth,
      opts,
    );
    return res.keyPackages;
  }

  /** welcome_info, signed with the joiner's KeyPackage key (joiner auth): the ratchet tree of the epoch it was added in. */
  async welcomeInfo(request: WelcomeInfoRequest, auth: RequestAuth, opts?: CallOptions): Promise<RatchetTree> {
    const res = await this.expect("welcome_info", { requestType: "welcome_info", welcomeInfoRequest: request }, auth, opts);
    return res.ratchetTree;
  }

  /** external_commit_info (anonymous by default): the current GroupInfo and ratchet tree. */
  async externalCommitInfo(
    groupId: Uint8Array,
    auth: RequestAuth = anonymous,
    opts?: CallOptions,
  ): Promise<ExternalCommitInfo> {
    const res = await this.expect(
      "external_commit_info",
      { requestType: "external_commit_info", externalCommitInfoRequest: { groupId } },
      auth,
      opts,
    );
    return { groupInfo: res.groupInfo, ratchetTree: res.ratchetTree };
  }

  reinitializeGroup(commit: MLSGroupUpdate, auth: RequestAuth, opts?: CallOptions): Promise<void> {
    return this.ok({ requestType: "reinitialize_group", reInitializeGroupRequest: { commit } }, auth, opts);
  }
}

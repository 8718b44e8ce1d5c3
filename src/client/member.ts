// MimiMember: a MimiClient with one current group, the SDK's original
// single-group API, kept for the tests, the CLI and the benchmarks. New code
// uses MimiClient (an identity, many groups) and MimiGroup (one group) from
// mimi-client.ts and group.ts; this class only forwards to them.
//
// As before: `prepareX` does the MLS work and returns the request plus the
// state to adopt, `X` submits it and adopts the state only once the hub
// accepted it (application messages advance the ratchet when prepared).
import type {
  CiphersuiteImpl,
  CiphersuiteName,
  ClientState,
  Credential,
  Extension,
  ExternalSender,
  GroupInfo,
  KeyPackage,
  MLSMessage,
  RatchetTree,
  Welcome,
} from "ts-mls";
import type { Transport } from "@connectrpc/connect";
import { type FanoutAuthToken, decodeMLSMessage } from "../wire/index.js";
import type { DSClient } from "./ds.js";
import type { IncomingResult, MimiGroup, PreparedCommitOperation, PreparedOperation } from "./group.js";
import type { PreparedCommit } from "./group-ops.js";
import type { LocalClientApi } from "./local.js";
import { MimiClient, type GroupOptions, type OwnKeyPackage, asWelcome } from "./mimi-client.js";
import type { RequestAuth } from "./sign.js";

export interface MimiMemberOptions {
  /** e.g. `mimi://example.com/u/alice/d/1` or `alice:1@example.com`. */
  readonly clientId: string;
  readonly cipherSuite?: CiphersuiteName;
  /** The hub of the group(s) this member creates or joins. */
  readonly hub?: DSClient;
  /** Transport to the client's own DS (ClientService). */
  readonly local?: Transport;
  /** An existing signature key pair; default: a fresh one. */
  readonly signatureKeyPair?: { readonly publicKey: Uint8Array; readonly signKey: Uint8Array };
  /** The Welcome's ratchet tree (default true) and the GroupInfo's (default false): see CommitOptions. */
  readonly welcomeRatchetTree?: boolean;
  readonly groupInfoRatchetTree?: boolean;
}

/** GroupOptions, or (as before) the extra GroupContext extensions alone. */
const groupOptions = (o: GroupOptions | readonly Extension[]): GroupOptions => (Array.isArray(o) ? { extensions: o as readonly Extension[] } : (o as GroupOptions));

export class MimiMember {
  /** The current group (the last one created or joined). */
  group: MimiGroup | undefined;

  private constructor(
    /** The identity behind this member, with every group it is in. */
    readonly client: MimiClient,
  ) {}

  static async create(options: MimiMemberOptions): Promise<MimiMember> {
    return new MimiMember(await MimiClient.create(options));
  }

  get clientId(): string {
    return this.client.clientId;
  }
  get cipherSuiteName(): CiphersuiteName {
    return this.client.cipherSuiteName;
  }
  get cs(): CiphersuiteImpl {
    return this.client.cs;
  }
  get signatureKeyPair(): { readonly publicKey: Uint8Array; readonly signKey: Uint8Array } {
    return this.client.signatureKeyPair;
  }
  get hub(): DSClient | undefined {
    return this.client.hub;
  }
  /** Switches the member (and its current group) to another DSClient, e.g. another instance of the hub. */
  set hub(hub: DSClient | undefined) {
    this.client.hub = hub;
    if (this.group !== undefined) this.group.hub = hub;
  }
  get local(): LocalClientApi | undefined {
    return this.client.local;
  }
  /** The FanoutAuthToken from register() (or set by the caller). */
  get token(): FanoutAuthToken | undefined {
    return this.client.token;
  }
  set token(token: FanoutAuthToken | undefined) {
    this.client.token = token;
  }

  /** The current group's state. Assigning one of the current group replaces it; undefined leaves the group. */
  get state(): ClientState | undefined {
    return this.group?.state;
  }
  set state(state: ClientState | undefined) {
    if (state === undefined) {
      this.group = undefined;
      return;
    }
    const existing = this.client.group(state.groupContext.groupId);
    if (existing !== undefined) {
      existing.state = state;
      this.group = existing;
    } else {
      this.group = this.client.adopt(state);
    }
  }

  get credential(): Credential {
    return this.client.credential;
  }

  /** This member as an ExternalSender entry (used for a hub's own identity in tests). */
  get asExternalSender(): ExternalSender {
    return this.client.asExternalSender;
  }

  private requireGroup(): MimiGroup {
    if (this.group === undefined || this.group.state === undefined) throw new Error(`${this.clientId}: not in a group`);
    return this.group;
  }

  // ---------------------------------------------------------------- own DS

  register(options: { readonly registrationCredential?: Uint8Array } = {}): Promise<FanoutAuthToken> {
    return this.client.register(options);
  }

  generateKeyPackage(options: { lastResort?: boolean; tokenInLeaf?: boolean } = {}): Promise<OwnKeyPackage> {
    return this.client.generateKeyPackage(options);
  }

  /** Generates `n` KeyPackages (plus a last-resort one if asked) and uploads them; how many the DS holds. */
  async publishKeyPackages(n: number, options: { lastResort?: boolean } = {}): Promise<number> {
    return (await this.client.publishKeyPackages(n, options)).stored;
  }

  // ---------------------------------------------------------------- group state

  get groupId(): Uint8Array {
    return this.requireGroup().groupId;
  }
  get epoch(): bigint {
    return this.requireGroup().epoch;
  }
  get leafIndex(): number {
    return this.requireGroup().leafIndex;
  }
  get treeHash(): Uint8Array {
    return this.requireGroup().treeHash;
  }
  computeTreeHash(): Promise<Uint8Array> {
    return this.requireGroup().computeTreeHash();
  }
  get ratchetTree(): RatchetTree {
    return this.requireGroup().ratchetTree;
  }
  members(): { leafIndex: number; clientId: string }[] {
    return this.requireGroup().members();
  }
  resolveLeaves(targets: readonly (number | string)[]): number[] {
    return this.requireGroup().resolveLeaves(targets);
  }

  // ---------------------------------------------------------------- create

  static groupExtensions(hubExternalSender: ExternalSender, options: GroupOptions | readonly Extension[] = {}): Extension[] {
    return MimiClient.groupExtensions(hubExternalSender, groupOptions(options));
  }

  /** Creates the ts-mls group locally (no DS call); it becomes this member's current group. */
  async createLocalGroup(groupId: Uint8Array, hubExternalSender: ExternalSender, options: GroupOptions | readonly Extension[] = {}): Promise<ClientState> {
    const state = await this.client.createLocalGroup(groupId, hubExternalSender, groupOptions(options));
    this.group = this.client.adopt(state);
    return state;
  }

  /** request_group_id, then create_group on the hub (the hub's external sender from HubInfo unless given). */
  async createGroup(hubExternalSender?: ExternalSender, options: GroupOptions | readonly Extension[] = {}): Promise<Uint8Array> {
    const o = groupOptions(options);
    this.group = await this.client.createGroup(hubExternalSender !== undefined ? { ...o, externalSender: hubExternalSender } : o);
    return this.group.groupId;
  }

  // ---------------------------------------------------------------- add / join

  prepareAdd(keyPackages: readonly KeyPackage[]): Promise<PreparedCommitOperation & { readonly welcome: Welcome }> {
    return this.requireGroup().prepareAdd(keyPackages);
  }

  /** add_clients; returns the Welcome (the hub also fans it out). */
  add(keyPackages: readonly KeyPackage[]): Promise<Welcome> {
    return this.requireGroup().add(keyPackages);
  }

  /** Fetches KeyPackages for `clientIds` (key_packages) and adds them. */
  addClients(clientIds: readonly string[]): Promise<Welcome> {
    return this.requireGroup().addClients(clientIds);
  }

  /** registered_client DSAuthData: this client, with the key it registered at its own DS. */
  registeredAuth(): RequestAuth {
    return this.client.registeredAuth();
  }

  inspectWelcome(welcome: Welcome): Promise<{ kp: OwnKeyPackage; groupInfo: GroupInfo }> {
    return this.client.inspectWelcome(welcome);
  }

  /** Joins with a Welcome and a ratchet tree obtained elsewhere (no DS call). */
  async joinWithTree(welcome: Welcome, ratchetTree: RatchetTree): Promise<ClientState> {
    this.group = await this.client.joinWithTree(welcome, ratchetTree);
    return this.group.state!;
  }

  /** welcome_info (joiner-signed with the KeyPackage's key) for the ratchet tree, then joins. */
  async joinFromWelcome(welcome: Welcome | MLSMessage | Uint8Array): Promise<ClientState> {
    this.group = await this.client.joinFromWelcome(asWelcome(welcome));
    return this.group.state!;
  }

  /** external_commit_info, then an external commit (resync: replace this member's own old leaf). */
  async externalJoin(groupId: Uint8Array, resync = false): Promise<ClientState> {
    this.group = await this.client.externalJoin(groupId, { resync });
    return this.group.state!;
  }

  // ---------------------------------------------------------------- operations

  /** A PrivateMessage application message; the ratchet advances now (a generation is never reused). */
  prepareSend(text: string | Uint8Array): Promise<PreparedOperation & { readonly newState: ClientState }> {
    return this.requireGroup().prepareSend(text);
  }

  send(text: string | Uint8Array): Promise<void> {
    return this.requireGroup().send(text);
  }

  prepareUpdate(newToken?: FanoutAuthToken): Promise<PreparedCommitOperation> {
    return this.requireGroup().prepareUpdate(newToken);
  }

  /** update_client: an empty commit with a path (fresh leaf key), optionally with a new token. */
  update(newToken?: FanoutAuthToken): Promise<void> {
    return this.requireGroup().update(newToken);
  }

  prepareRemove(targets: readonly (number | string)[]): Promise<PreparedCommitOperation> {
    return this.requireGroup().prepareRemove(targets);
  }

  remove(targets: readonly (number | string)[]): Promise<void> {
    return this.requireGroup().remove(targets);
  }

  prepareSelfRemove(): Promise<PreparedOperation & { readonly newState: ClientState }> {
    return this.requireGroup().prepareSelfRemove();
  }

  /** self_remove_client: another member's next commit removes this one. */
  selfRemove(): Promise<void> {
    return this.requireGroup().selfRemove();
  }

  prepareCommitPending(): Promise<PreparedCommitOperation> {
    return this.requireGroup().prepareCommitPending();
  }

  /** Commits every stored proposal by reference (add_clients, remove_clients or update_client). */
  commitPending(): Promise<void> {
    return this.requireGroup().commitPending();
  }

  prepareReinitialize(newGroupId: Uint8Array, extensions: Extension[] = []): Promise<PreparedCommitOperation> {
    return this.requireGroup().prepareReinitialize(newGroupId, extensions);
  }

  reinitialize(newGroupId: Uint8Array, extensions: Extension[] = []): Promise<void> {
    return this.requireGroup().reinitialize(newGroupId, extensions);
  }

  prepareDelete(): Promise<PreparedOperation & { readonly groupUpdate: PreparedCommit["groupUpdate"] }> {
    return this.requireGroup().prepareDelete();
  }

  /** delete_group: a commit removing every other member; afterwards this member is in no group. */
  async deleteGroup(): Promise<void> {
    await this.requireGroup().delete();
    this.group = undefined;
  }

  /** Submits an operation prepared on the current group (see MimiGroup.submit). */
  submit(op: PreparedOperation): Promise<void> {
    return this.requireGroup().submit(op);
  }

  /** This member's DSRequest authentication in the current group. */
  memberAuth(): RequestAuth {
    return this.requireGroup().memberAuth();
  }

  /**
   * Applies one MLSMessage received from the DS: a Welcome (joins via
   * welcome_info; the group becomes current), a commit or proposal of another
   * member, or an application message (decrypted), of the current group.
   */
  async processIncoming(bytes: Uint8Array | MLSMessage): Promise<IncomingResult> {
    const msg = bytes instanceof Uint8Array ? decodeMLSMessage(bytes) : bytes;
    if (msg.wireformat === "mls_welcome") {
      const state = await this.joinFromWelcome(msg.welcome);
      return { kind: "joined", epoch: state.groupContext.epoch };
    }
    if (msg.wireformat !== "mls_public_message" && msg.wireformat !== "mls_private_message") {
      throw new Error(`cannot process an MLSMessage of wire format ${msg.wireformat}`);
    }
    return this.requireGroup().processIncoming(msg);
  }
}

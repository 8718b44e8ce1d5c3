// MimiMember: one MLS client (ts-mls) driving a MIMI DS. It holds the client's
// identity (BasicCredential with the client id, a signature key pair, a cipher
// suite), its unused KeyPackages, and the state of one group; it talks to the
// group's hub through a DSClient and to its own DS through a LocalClientApi
// (both may be the same server).
//
// Every group operation is split in two: `prepareX` does the MLS work and
// returns the DS request plus the state to adopt, `X` submits it and adopts
// the state only when the hub accepted it (so a refused commit leaves the
// member in its old epoch, ready to process the winning commit instead).
import {
  type CiphersuiteImpl,
  type CiphersuiteName,
  type ClientState,
  type Credential,
  type Extension,
  type ExternalSender,
  type GroupInfo,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
  type Proposal,
  type RatchetTree,
  type Welcome,
  acceptAll,
  ciphersuites,
  createApplicationMessage,
  createCommit,
  createGroup as tsCreateGroup,
  createGroupInfoWithExternalPub,
  createProposal,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  joinGroupExternal,
  processMessage,
} from "ts-mls";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decryptGroupInfo, decryptGroupSecrets } from "ts-mls/welcome.js";
import { treeHashRoot } from "ts-mls/treeHash.js";
import type { Transport } from "@connectrpc/connect";
import {
  DS_PROTOCOL_VERSION,
  DSExtensionType,
  type FanoutAuthToken,
  type MLSGroupUpdate,
  type PartialGroupInfo,
  decodeFanoutAuthToken,
  decodeMLSMessage,
  encodeMLSMessage,
  encodeRatchetTreeBytes,
  makeDSProtocolVersionExtension,
  makeDSSupportedVersionsExtension,
  makeExternalSendersExtension,
  makeFanoutAuthExtension,
  makeLastResortExtension,
} from "../wire/index.js";
import type { DSClient } from "./ds.js";
import { LocalClientApi } from "./local.js";
import type { RequestAuth } from "./sign.js";

export const DEFAULT_CIPHERSUITE: CiphersuiteName = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

/** Our extension types a MimiMember lists in its capabilities (fanout_auth, ds_protocol_version, ...). */
export const MIMI_CAPABILITY_EXTENSIONS: readonly number[] = [
  DSExtensionType.fanout_auth,
  DSExtensionType.ds_protocol_version,
  DSExtensionType.ds_supported_versions,
  DSExtensionType.last_resort,
];

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
}

/** A KeyPackage this member generated and can still be added with. */
export interface OwnKeyPackage {
  readonly publicPackage: KeyPackage;
  readonly privatePackage: PrivateKeyPackage;
  readonly ref: Uint8Array;
  readonly lastResort: boolean;
}

/** What processIncoming did. */
export type IncomingResult =
  | { readonly kind: "application"; readonly data: Uint8Array; readonly text: string }
  | { readonly kind: "commit"; readonly epoch: bigint; readonly removed: boolean }
  | { readonly kind: "proposal" }
  | { readonly kind: "joined"; readonly epoch: bigint }
  /** A handshake message of an epoch this member already left (e.g. its own commit echoed back). */
  | { readonly kind: "stale"; readonly epoch: bigint };

/** A group operation's DS request, and the state to adopt once the hub accepted it. */
export interface PreparedCommit {
  readonly groupUpdate: MLSGroupUpdate;
  readonly welcome?: Welcome;
  readonly newState: ClientState;
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

function suiteNumber(name: CiphersuiteName): number {
  return ciphersuites[name];
}

export class MimiMember {
  /** The FanoutAuthToken from register() (or set by the caller). */
  token: FanoutAuthToken | undefined;
  /** The current group, once created or joined. */
  state: ClientState | undefined;
  readonly local: LocalClientApi | undefined;
  private readonly keyPackages = new Map<string, OwnKeyPackage>();

  private constructor(
    readonly clientId: string,
    readonly cipherSuiteName: CiphersuiteName,
    readonly cs: CiphersuiteImpl,
    readonly signatureKeyPair: { readonly publicKey: Uint8Array; readonly signKey: Uint8Array },
    readonly hub: DSClient | undefined,
    local: Transport | undefined,
  ) {
    this.local =
      local === undefined
        ? undefined
        : new LocalClientApi(local, { clientId, signaturePrivateKey: signatureKeyPair.signKey, signature: cs.signature });
  }

  static async create(options: MimiMemberOptions): Promise<MimiMember> {
    const name = options.cipherSuite ?? DEFAULT_CIPHERSUITE;
    const cs = await getCiphersuiteImpl(getCiphersuiteFromName(name));
    const keys = options.signatureKeyPair ?? (await cs.signature.keygen());
    return new MimiMember(options.clientId, name, cs, keys, options.hub, options.local);
  }

  get credential(): Credential {
    return { credentialType: "basic", identity: utf8.encode(this.clientId) };
  }

  /** This member as an ExternalSender entry (used for a hub's own identity in tests). */
  get asExternalSender(): ExternalSender {
    return { signaturePublicKey: this.signatureKeyPair.publicKey, credential: this.credential };
  }

  // ---------------------------------------------------------------- own DS

  private requireLocal(): LocalClientApi {
    if (this.local === undefined) throw new Error(`${this.clientId}: no transport to its own DS`);
    return this.local;
  }

  private requireHub(): DSClient {
    if (this.hub === undefined) throw new Error(`${this.clientId}: no hub DSClient`);
    return this.hub;
  }

  /**
   * Registers the signature key with the own DS and keeps the FanoutAuthToken.
   * A new registration needs the provider's RegistrationCredential unless the
   * DS runs with open registration (development).
   */
  async register(options: { readonly registrationCredential?: Uint8Array } = {}): Promise<FanoutAuthToken> {
    const bytes = await this.requireLocal().register(this.signatureKeyPair.publicKey, suiteNumber(this.cipherSuiteName), options);
    this.token = decodeFanoutAuthToken(bytes);
    return this.token;
  }

  /**
   * A fresh KeyPackage carrying the FanoutAuth extension (when a token is
   * known) and advertising our extensions; kept for joining later.
   */
  async generateKeyPackage(options: { lastResort?: boolean; tokenInLeaf?: boolean } = {}): Promise<OwnKeyPackage> {
    const extensions: Extension[] = [];
    if (this.token !== undefined) extensions.push(makeFanoutAuthExtension(this.token));
    if (options.lastResort === true) extensions.push(makeLastResortExtension());
    const capabilities = { ...defaultCapabilities(), extensions: [...MIMI_CAPABILITY_EXTENSIONS] };
    const { publicPackage, privatePackage } = await generateKeyPackageWithKey(
      this.credential,
      capabilities,
      defaultLifetime,
      extensions,
      this.signatureKeyPair,
      this.cs,
      [
        makeDSSupportedVersionsExtension([DS_PROTOCOL_VERSION]),
        // An external joiner has no KeyPackage at the hub: its token travels in its leaf (docs/protocol.md).
        ...(options.tokenInLeaf === true && this.token !== undefined ? [makeFanoutAuthExtension(this.token)] : []),
      ],
    );
    const ref = await makeKeyPackageRef(publicPackage, this.cs.hash);
    const own: OwnKeyPackage = { publicPackage, privatePackage, ref, lastResort: options.lastResort === true };
    this.keyPackages.set(hex(ref), own);
    return own;
  }

  /** Generates `n` KeyPackages (plus a last-resort one if asked) and uploads them to the own DS. */
  async publishKeyPackages(n: number, options: { lastResort?: boolean } = {}): Promise<number> {
    if (this.token === undefined) throw new Error(`${this.clientId}: register() first (KeyPackages need the FanoutAuthToken)`);
    const kps: Uint8Array[] = [];
    for (let i = 0; i < n; i++) kps.push(keyPackageMessage((await this.generateKeyPackage()).publicPackage));
    const last = options.lastResort === true ? keyPackageMessage((await this.generateKeyPackage({ lastResort: true })).publicPackage) : undefined;
    return this.requireLocal().publishKeyPackages(kps, last);
  }

  // ---------------------------------------------------------------- group state

  private requireState(): ClientState {
    if (this.state === undefined) throw new Error(`${this.clientId}: not in a group`);
    return this.state;
  }

  get groupId(): Uint8Array {
    return this.requireState().groupContext.groupId;
  }

  get epoch(): bigint {
    return this.requireState().groupContext.epoch;
  }

  get leafIndex(): number {
    return this.requireState().privatePath.leafIndex;
  }

  /** The tree hash of the current epoch's GroupContext. */
  get treeHash(): Uint8Array {
    return this.requireState().groupContext.treeHash;
  }

  /** Recomputes the tree hash from the ratchet tree (should equal treeHash). */
  computeTreeHash(): Promise<Uint8Array> {
    return treeHashRoot(this.requireState().ratchetTree, this.cs.hash);
  }

  get ratchetTree(): RatchetTree {
    return this.requireState().ratchetTree;
  }

  /** Client ids by leaf index (blank leaves left out). */
  members(): { leafIndex: number; clientId: string }[] {
    const out: { leafIndex: number; clientId: string }[] = [];
    this.requireState().ratchetTree.forEach((node, i) => {
      if (node?.nodeType !== "leaf" || i % 2 !== 0) return;
      const cred = node.leaf.credential;
      out.push({ leafIndex: i / 2, clientId: cred.credentialType === "basic" ? utf8d.decode(cred.identity) : "" });
    });
    return out;
  }

  private memberAuth(state: ClientState = this.requireState()): RequestAuth {
    return {
      kind: "member",
      senderIndex: state.privatePath.leafIndex,
      signaturePrivateKey: this.signatureKeyPair.signKey,
      signature: this.cs.signature,
    };
  }

  /** The PartialGroupInfo of `newState`: extensions (with external_pub) and the signature of its GroupInfo. */
  private async partialGroupInfo(newState: ClientState): Promise<PartialGroupInfo> {
    const gi = await createGroupInfoWithExternalPub(newState, [], this.cs);
    return { groupInfoExtensions: gi.extensions, signature: gi.signature };
  }

  private async commit(proposals: Proposal[]): Promise<PreparedCommit> {
    const res = await createCommit(
      { state: this.requireState(), cipherSuite: this.cs },
      { wireAsPublicMessage: true, extraProposals: proposals },
    );
    const groupUpdate: MLSGroupUpdate = { commit: res.commit, partialGroupInfo: await this.partialGroupInfo(res.newState) };
    return { groupUpdate, newState: res.newState, ...(res.welcome !== undefined ? { welcome: res.welcome } : {}) };
  }

  // ---------------------------------------------------------------- create

  /** The GroupContext extensions of a new group: RFC 9420 external_senders (the hub) and ds_protocol_version. */
  static groupExtensions(hubExternalSender: ExternalSender): Extension[] {
    return [makeExternalSendersExtension([hubExternalSender]), makeDSProtocolVersionExtension(DS_PROTOCOL_VERSION)];
  }

  /** Creates the ts-mls group locally (no DS call); the state becomes this member's group. */
  async createLocalGroup(groupId: Uint8Array, hubExternalSender: ExternalSender): Promise<ClientState> {
    const kp = await this.generateKeyPackage();
    this.keyPackages.delete(hex(kp.ref)); // used for the creator's leaf, not for a Welcome
    // Needs a ts-mls that reads RFC 9420 external_senders (patches/ts-mls+1.6.4.patch,
    // upstream PR 476): plain 1.6.4 throws CodecError "Could not decode external_senders".
    this.state = await tsCreateGroup(
      groupId,
      kp.publicPackage,
      kp.privatePackage,
      MimiMember.groupExtensions(hubExternalSender),
      this.cs,
    );
    return this.state;
  }

  /**
   * request_group_id, then create_group on the hub with the signed GroupInfo
   * (with external_pub), the ratchet tree and this member's token.
   */
  async createGroup(hubExternalSender: ExternalSender): Promise<Uint8Array> {
    const hub = this.requireHub();
    if (this.token === undefined) throw new Error(`${this.clientId}: register() first (create_group needs the token)`);
    const groupId = await hub.requestGroupId();
    const state = await this.createLocalGroup(groupId, hubExternalSender);
    try {
      const gi = await createGroupInfoWithExternalPub(state, [], this.cs);
      await hub.createGroup(
        {
          groupInfo: groupInfoMessage(gi),
          ratchetTree: encodeRatchetTreeBytes(state.ratchetTree),
          creatorToken: this.token,
        },
        this.memberAuth(state),
      );
    } catch (err) {
      this.state = undefined;
      throw err;
    }
    return groupId;
  }

  // ---------------------------------------------------------------- add / join

  /** Commit adding `keyPackages` (PublicMessage), its PartialGroupInfo and the Welcome. */
  async prepareAdd(keyPackages: readonly KeyPackage[]): Promise<PreparedCommit & { welcome: Welcome }> {
    const prepared = await this.commit(keyPackages.map((keyPackage) => ({ proposalType: "add", add: { keyPackage } })));
    if (prepared.welcome === undefined) throw new Error("an Add commit without a Welcome");
    return { ...prepared, welcome: prepared.welcome };
  }

  /** add_clients; returns the Welcome (the hub also fans it out). */
  async add(keyPackages: readonly KeyPackage[]): Promise<Welcome> {
    const p = await this.prepareAdd(keyPackages);
    await this.requireHub().addClients(
      { groupUpdate: p.groupUpdate, welcomeMessages: [welcomeMessage(p.welcome)] },
      this.memberAuth(),
    );
    this.state = p.newState;
    return p.welcome;
  }

  /** Fetches KeyPackages for `clientIds` (key_packages) and adds them. */
  async addClients(clientIds: readonly string[]): Promise<Welcome> {
    const kps = await this.requireHub().keyPackages(clientIds, [suiteNumber(this.cipherSuiteName)]);
    return this.add(kps);
  }

  /** The own KeyPackage a Welcome is for, with the group id and epoch read from its (decrypted) GroupInfo. */
  async inspectWelcome(welcome: Welcome): Promise<{ kp: OwnKeyPackage; groupInfo: GroupInfo }> {
    for (const secret of welcome.secrets) {
      const kp = this.keyPackages.get(hex(secret.newMember));
      if (kp === undefined) continue;
      const initKey = await this.cs.hpke.importPrivateKey(kp.privatePackage.initPrivateKey);
      const gs = await decryptGroupSecrets(initKey, kp.ref, welcome, this.cs.hpke);
      if (gs === undefined) throw new Error("cannot decrypt the Welcome's GroupSecrets");
      if (gs.psks.length > 0) throw new Error("Welcomes with PSKs are not supported");
      const gi = await decryptGroupInfo(welcome, gs.joinerSecret, new Uint8Array(this.cs.kdf.size), this.cs);
      if (gi === undefined) throw new Error("cannot decrypt the Welcome's GroupInfo");
      return { kp, groupInfo: gi };
    }
    throw new Error(`${this.clientId}: the Welcome is for none of this member's KeyPackages`);
  }

  /** Joins with a Welcome and a ratchet tree obtained elsewhere (no DS call). */
  async joinWithTree(welcome: Welcome, ratchetTree: RatchetTree): Promise<ClientState> {
    const { kp } = await this.inspectWelcome(welcome);
    this.state = await joinGroup(welcome, kp.publicPackage, kp.privatePackage, emptyPskIndex, this.cs, ratchetTree);
    if (!kp.lastResort) this.keyPackages.delete(hex(kp.ref));
    return this.state;
  }

  /** welcome_info (joiner-signed with the KeyPackage's key) for the ratchet tree, then joins. */
  async joinFromWelcome(welcome: Welcome | MLSMessage | Uint8Array): Promise<ClientState> {
    const w = asWelcome(welcome);
    const { kp, groupInfo } = await this.inspectWelcome(w);
    const tree = await this.requireHub().welcomeInfo(
      { groupId: groupInfo.groupContext.groupId, epoch: groupInfo.groupContext.epoch, keyPackageRef: kp.ref },
      {
        kind: "joiner",
        keyPackageRef: kp.ref,
        signaturePrivateKey: kp.privatePackage.signaturePrivateKey,
        signature: this.cs.signature,
      },
    );
    return this.joinWithTree(w, tree);
  }

  /** external_commit_info, then an external commit (resync: replace this member's own old leaf). */
  async externalJoin(groupId: Uint8Array, resync = false): Promise<ClientState> {
    const hub = this.requireHub();
    const info = await hub.externalCommitInfo(groupId);
    if (info.groupInfo.wireformat !== "mls_group_info") throw new Error("external_commit_info without a GroupInfo");
    const kp = await this.generateKeyPackage({ tokenInLeaf: true });
    this.keyPackages.delete(hex(kp.ref));
    const { publicMessage, newState } = await joinGroupExternal(
      info.groupInfo.groupInfo,
      kp.publicPackage,
      kp.privatePackage,
      resync,
      this.cs,
      info.ratchetTree,
    );
    const commit: MLSMessage = { version: "mls10", wireformat: "mls_public_message", publicMessage };
    await hub.externalJoin({ commit, partialGroupInfo: await this.partialGroupInfo(newState) });
    this.state = newState;
    return newState;
  }

  // ---------------------------------------------------------------- messages

  /** A PrivateMessage application message (no DS call). */
  async prepareSend(text: string | Uint8Array): Promise<{ message: MLSMessage; newState: ClientState }> {
    const data = typeof text === "string" ? utf8.encode(text) : text;
    const res = await createApplicationMessage(this.requireState(), data, this.cs);
    return {
      message: { version: "mls10", wireformat: "mls_private_message", privateMessage: res.privateMessage },
      newState: res.newState,
    };
  }

  /** send_message. The sender's ratchet advances even if the DS refuses (a generation is never reused). */
  async send(text: string | Uint8Array): Promise<void> {
    const { message, newState } = await this.prepareSend(text);
    this.state = newState;
    await this.requireHub().sendMessage(message, this.memberAuth(newState));
  }

  /** update_client: an empty commit with a path (fresh leaf key), optionally with a new token. */
  async update(newToken?: FanoutAuthToken): Promise<void> {
    const p = await this.commit([]);
    await this.requireHub().updateClient(p.groupUpdate, newToken, this.memberAuth());
    this.state = p.newState;
    if (newToken !== undefined) this.token = newToken;
  }

  /** Leaf indices of the given client ids (or the indices themselves). */
  resolveLeaves(targets: readonly (number | string)[]): number[] {
    const members = this.members();
    return targets.map((t) => {
      if (typeof t === "number") return t;
      const m = members.find((x) => x.clientId === t);
      if (m === undefined) throw new Error(`${t} is not a member`);
      return m.leafIndex;
    });
  }

  async prepareRemove(targets: readonly (number | string)[]): Promise<PreparedCommit> {
    return this.commit(this.resolveLeaves(targets).map((removed) => ({ proposalType: "remove", remove: { removed } })));
  }

  /** remove_clients. */
  async remove(targets: readonly (number | string)[]): Promise<void> {
    const p = await this.prepareRemove(targets);
    await this.requireHub().removeClients(p.groupUpdate, this.memberAuth());
    this.state = p.newState;
  }

  /**
   * A PublicMessage Remove proposal of this member's own leaf (draft -05; ts-mls
   * 1.6.4 cannot build a SelfRemove proposal).
   */
  async prepareSelfRemove(): Promise<{ message: MLSMessage; newState: ClientState }> {
    const state = this.requireState();
    const res = await createProposal(
      state,
      true,
      { proposalType: "remove", remove: { removed: state.privatePath.leafIndex } },
      this.cs,
    );
    return { message: res.message, newState: res.newState };
  }

  /** self_remove_client: another member's next commit removes this one. */
  async selfRemove(): Promise<void> {
    const p = await this.prepareSelfRemove();
    await this.requireHub().selfRemoveClient(p.message, this.memberAuth());
    this.state = p.newState;
  }

  /**
   * Commits every stored proposal by reference. Sent as add_clients when the
   * pending proposals add someone (with the Welcome), else remove_clients when
   * they remove someone, else update_client.
   */
  async commitPending(): Promise<void> {
    const state = this.requireState();
    const pending = Object.values(state.unappliedProposals).map((p) => p.proposal.proposalType);
    const p = await this.commit([]);
    const hub = this.requireHub();
    const auth = this.memberAuth();
    if (pending.includes("add")) {
      await hub.addClients(
        { groupUpdate: p.groupUpdate, welcomeMessages: p.welcome ? [welcomeMessage(p.welcome)] : [] },
        auth,
      );
    } else if (pending.includes("remove")) {
      await hub.removeClients(p.groupUpdate, auth);
    } else {
      await hub.updateClient(p.groupUpdate, undefined, auth);
    }
    this.state = p.newState;
  }

  /** reinitialize_group: a commit with a ReInit proposal to `newGroupId` (same version and suite). */
  async reinitialize(newGroupId: Uint8Array, extensions: Extension[] = []): Promise<void> {
    const gc = this.requireState().groupContext;
    const p = await this.commit([
      { proposalType: "reinit", reinit: { groupId: newGroupId, version: gc.version, cipherSuite: gc.cipherSuite, extensions } },
    ]);
    await this.requireHub().reinitializeGroup(p.groupUpdate, this.memberAuth());
    this.state = p.newState;
  }

  /** delete_group: a commit removing every other member. */
  async deleteGroup(): Promise<void> {
    const me = this.leafIndex;
    const others = this.members().filter((m) => m.leafIndex !== me).map((m) => m.leafIndex);
    const p = await this.commit(others.map((removed) => ({ proposalType: "remove", remove: { removed } })));
    await this.requireHub().deleteGroup(p.groupUpdate, this.memberAuth());
    this.state = undefined;
  }

  /**
   * Applies one MLSMessage received from the DS: a Welcome (joins via
   * welcome_info), a commit or proposal of another member, or an application
   * message (decrypted).
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
    const state = this.requireState();
    if (msg.wireformat === "mls_public_message" && msg.publicMessage.content.epoch < state.groupContext.epoch) {
      return { kind: "stale", epoch: msg.publicMessage.content.epoch };
    }
    const res = await processMessage(msg, state, emptyPskIndex, acceptAll, this.cs);
    this.state = res.newState;
    if (res.kind === "applicationMessage") return { kind: "application", data: res.message, text: utf8d.decode(res.message) };
    const newEpoch = res.newState.groupContext.epoch;
    // A commit removing this member leaves its state in the old epoch, marked removed.
    const removed = res.newState.groupActiveState.kind === "removedFromGroup";
    if (removed) return { kind: "commit", epoch: state.groupContext.epoch + 1n, removed };
    if (newEpoch === state.groupContext.epoch) return { kind: "proposal" };
    return { kind: "commit", epoch: newEpoch, removed };
  }
}

// ---------------------------------------------------------------- MLSMessage wrappers

export function keyPackageMessage(kp: KeyPackage): Uint8Array {
  return encodeMLSMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: kp });
}

export function groupInfoMessage(gi: GroupInfo): MLSMessage {
  return { version: "mls10", wireformat: "mls_group_info", groupInfo: gi };
}

export function welcomeMessage(w: Welcome): MLSMessage {
  return { version: "mls10", wireformat: "mls_welcome", welcome: w };
}

function asWelcome(w: Welcome | MLSMessage | Uint8Array): Welcome {
  const m = w instanceof Uint8Array ? decodeMLSMessage(w) : w;
  if ("wireformat" in m) {
    if (m.wireformat !== "mls_welcome") throw new Error(`expected a Welcome, got ${m.wireformat}`);
    return m.welcome;
  }
  return m;
}

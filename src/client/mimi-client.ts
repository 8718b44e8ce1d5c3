// MimiClient: one MLS client (ts-mls) of a MIMI DS. It holds the identity
// (BasicCredential with the client id, a signature key pair, a cipher suite),
// its FanoutAuthToken, the KeyPackages it generated and can still be added
// with, and one MimiGroup per group it is in, on whichever hubs host them. It
// talks to its own DS through a LocalClientApi (register, KeyPackages, its
// queue) and to each group's hub through a DSClient.
import {
  type CiphersuiteImpl,
  type CiphersuiteName,
  type ClientState,
  type Credential,
  type Extension,
  type ExternalSender,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
  type RatchetTree,
  type Welcome,
  type GroupInfo,
  ciphersuites,
  createGroup as tsCreateGroup,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
} from "ts-mls";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decryptGroupInfo, decryptGroupSecrets } from "ts-mls/welcome.js";
import type { Transport } from "@connectrpc/connect";
import {
  DS_PROTOCOL_VERSION,
  DSExtensionType,
  type FanoutAuthToken,
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
import type { CallOptions, DSClient } from "./ds.js";
import { type GroupOwner, type IncomingResult, MimiGroup, groupIdOf } from "./group.js";
import { creatorGroupInfo, externalJoinCommit, type CommitOptions } from "./group-ops.js";
import { LocalClientApi } from "./local.js";
import { Receiver, type ReceiverOptions } from "./receive.js";
import type { RequestAuth } from "./sign.js";
import { assertTsMlsPatched } from "./ts-mls-check.js";

export const DEFAULT_CIPHERSUITE: CiphersuiteName = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

/** Our extension types a client lists in its capabilities (fanout_auth, ds_protocol_version, ...). */
export const MIMI_CAPABILITY_EXTENSIONS: readonly number[] = [
  DSExtensionType.fanout_auth,
  DSExtensionType.ds_protocol_version,
  DSExtensionType.ds_supported_versions,
  DSExtensionType.last_resort,
  DSExtensionType.external_join_policy,
];

export interface MimiClientOptions {
  /** e.g. `mimi://example.com/u/alice/d/1` or `alice:1@example.com`. */
  readonly clientId: string;
  readonly cipherSuite?: CiphersuiteName;
  /** The hub of groups this client creates, and of groups it joins unless `hubFor` names another. */
  readonly hub?: DSClient;
  /** The hub hosting a group (group ids end in `@<hub domain>`), for joins and for routing. */
  readonly hubFor?: (groupId: Uint8Array) => DSClient | undefined;
  /** Transport to the client's own DS (ClientService). */
  readonly local?: Transport;
  /** An existing signature key pair; default: a fresh one. */
  readonly signatureKeyPair?: { readonly publicKey: Uint8Array; readonly signKey: Uint8Array };
  /** The Welcome's ratchet tree (default true) and the GroupInfo's (default false): see CommitOptions. */
  readonly welcomeRatchetTree?: boolean;
  readonly groupInfoRatchetTree?: boolean;
}

/** How a group is created (createGroup, createLocalGroup). */
export interface GroupOptions {
  /**
   * Carry the ds_protocol_version GroupContext extension (default true, draft
   * -05). false makes a group that standard RFC 9420 clients can join: they
   * must list every GroupContext extension in their capabilities and cannot
   * (the hub must run the rfc9420 client policy; docs/interop.md).
   */
  readonly dsProtocolVersion?: boolean;
  /** More GroupContext extensions beside the hub's (e.g. an external_join_policy that opens the group to external joins). */
  readonly extensions?: readonly Extension[];
}

/** A KeyPackage this client generated and can still be added with. */
export interface OwnKeyPackage {
  readonly publicPackage: KeyPackage;
  readonly privatePackage: PrivateKeyPackage;
  readonly ref: Uint8Array;
  readonly lastResort: boolean;
}

/** What publishKeyPackages uploaded. */
export interface PublishedKeyPackages {
  readonly keyPackages: readonly OwnKeyPackage[];
  readonly lastResort?: OwnKeyPackage;
  /** How many ordinary packages the DS now holds for this client. */
  readonly stored: number;
}

/** One queue entry, applied: the group it concerns and what happened. */
export type ClientIncoming =
  | { readonly group: MimiGroup; readonly result: IncomingResult }
  /** A message for a group this client is not (or no longer) in. */
  | { readonly group: undefined; readonly result: { readonly kind: "unknown_group"; readonly groupId: Uint8Array } };

const utf8 = new TextEncoder();

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export function keyPackageMessage(kp: KeyPackage): Uint8Array {
  return encodeMLSMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: kp });
}

export function groupInfoMessage(gi: GroupInfo): MLSMessage {
  return { version: "mls10", wireformat: "mls_group_info", groupInfo: gi };
}

export function asWelcome(w: Welcome | MLSMessage | Uint8Array): Welcome {
  const m = w instanceof Uint8Array ? decodeMLSMessage(w) : w;
  if ("wireformat" in m) {
    if (m.wireformat !== "mls_welcome") throw new Error(`expected a Welcome, got ${m.wireformat}`);
    return m.welcome;
  }
  return m;
}

export class MimiClient implements GroupOwner {
  /** The FanoutAuthToken from register() (or set by the caller). */
  token: FanoutAuthToken | undefined;
  readonly local: LocalClientApi | undefined;
  private readonly keyPackages = new Map<string, OwnKeyPackage>();
  private readonly groupsById = new Map<string, MimiGroup>();

  private constructor(
    readonly clientId: string,
    readonly cipherSuiteName: CiphersuiteName,
    readonly cs: CiphersuiteImpl,
    readonly signatureKeyPair: { readonly publicKey: Uint8Array; readonly signKey: Uint8Array },
    /** The default hub (for new groups, and joins that `hubFor` does not place). */
    public hub: DSClient | undefined,
    private readonly hubFor: ((groupId: Uint8Array) => DSClient | undefined) | undefined,
    local: Transport | undefined,
    readonly commitOptions: CommitOptions,
  ) {
    this.local =
      local === undefined
        ? undefined
        : new LocalClientApi(local, { clientId, signaturePrivateKey: signatureKeyPair.signKey, signature: cs.signature });
  }

  static async create(options: MimiClientOptions): Promise<MimiClient> {
    assertTsMlsPatched();
    const name = options.cipherSuite ?? DEFAULT_CIPHERSUITE;
    const cs = await getCiphersuiteImpl(getCiphersuiteFromName(name));
    const keys = options.signatureKeyPair ?? (await cs.signature.keygen());
    return new MimiClient(options.clientId, name, cs, keys, options.hub, options.hubFor, options.local, {
      welcomeRatchetTree: options.welcomeRatchetTree ?? true,
      groupInfoRatchetTree: options.groupInfoRatchetTree ?? false,
    });
  }

  /** registered_client DSAuthData: this client, with the key it registered at its own DS (key_packages). */
  registeredAuth(): RequestAuth {
    return { kind: "registered", clientId: this.clientId, signaturePrivateKey: this.signatureKeyPair.signKey, signature: this.cs.signature };
  }

  /** The MLS cipher suite number (e.g. 1). */
  get cipherSuite(): number {
    return ciphersuites[this.cipherSuiteName];
  }

  get credential(): Credential {
    return { credentialType: "basic", identity: utf8.encode(this.clientId) };
  }

  /** This client as an ExternalSender entry (used for a hub's own identity in tests). */
  get asExternalSender(): ExternalSender {
    return { signaturePublicKey: this.signatureKeyPair.publicKey, credential: this.credential };
  }

  // ---------------------------------------------------------------- groups

  /** Every group this client is in. */
  get groups(): readonly MimiGroup[] {
    return [...this.groupsById.values()];
  }

  /** The group with this id, if this client is in it. */
  group(groupId: Uint8Array): MimiGroup | undefined {
    return this.groupsById.get(hex(groupId));
  }

  /** Adds a group built elsewhere (e.g. a state restored from storage). */
  adopt(state: ClientState, hub: DSClient | undefined = this.hubOf(state.groupContext.groupId)): MimiGroup {
    const group = new MimiGroup(this, hub, state);
    this.groupsById.set(hex(state.groupContext.groupId), group);
    return group;
  }

  forget(group: MimiGroup): void {
    for (const [k, g] of this.groupsById) if (g === group) this.groupsById.delete(k);
  }

  private hubOf(groupId: Uint8Array): DSClient | undefined {
    return this.hubFor?.(groupId) ?? this.hub;
  }

  private requireHub(hub: DSClient | undefined, what: string): DSClient {
    if (hub === undefined) throw new Error(`${this.clientId}: no hub DSClient for ${what}`);
    return hub;
  }

  private requireLocal(): LocalClientApi {
    if (this.local === undefined) throw new Error(`${this.clientId}: no transport to its own DS`);
    return this.local;
  }

  // ---------------------------------------------------------------- own DS

  /** Registers the signature key with the own DS and keeps the FanoutAuthToken. */
  /**
   * Registers the signature key with the own DS and keeps the FanoutAuthToken.
   * A new registration needs the provider's RegistrationCredential unless the
   * DS runs with open registration (development).
   */
  async register(opts?: CallOptions & { readonly registrationCredential?: Uint8Array }): Promise<FanoutAuthToken> {
    const bytes = await this.requireLocal().register(this.signatureKeyPair.publicKey, this.cipherSuite, opts);
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

  /** Generates `n` KeyPackages (plus a last-resort one if asked), uploads them, and returns what it published. */
  async publishKeyPackages(n: number, options: { lastResort?: boolean } = {}, opts?: CallOptions): Promise<PublishedKeyPackages> {
    if (this.token === undefined) throw new Error(`${this.clientId}: register() first (KeyPackages need the FanoutAuthToken)`);
    const keyPackages: OwnKeyPackage[] = [];
    for (let i = 0; i < n; i++) keyPackages.push(await this.generateKeyPackage());
    const lastResort = options.lastResort === true ? await this.generateKeyPackage({ lastResort: true }) : undefined;
    const stored = await this.requireLocal().publishKeyPackages(
      keyPackages.map((k) => keyPackageMessage(k.publicPackage)),
      lastResort !== undefined ? keyPackageMessage(lastResort.publicPackage) : undefined,
      opts,
    );
    return { keyPackages, ...(lastResort !== undefined ? { lastResort } : {}), stored };
  }

  /** A Receiver over this client's queue (reconnects, resumes, acknowledges). */
  receiver(options: ReceiverOptions = {}): Receiver {
    return new Receiver(this.requireLocal(), options);
  }

  /**
   * Runs this client's queue through processIncoming until `signal` aborts:
   * every entry applied once, in order, then acknowledged. `onMessage` sees
   * each result (its failure stops the loop; the entry stays unacknowledged).
   */
  async receive(options: ReceiverOptions & { onMessage?: (m: ClientIncoming & { sequence: bigint }) => Promise<void> | void } = {}): Promise<void> {
    const { onMessage, ...receiverOptions } = options;
    await this.receiver(receiverOptions).run(async (entry) => {
      const applied = await this.processIncoming(entry.mlsMessage);
      await onMessage?.({ ...applied, sequence: entry.sequence } as ClientIncoming & { sequence: bigint });
    });
  }

  // ---------------------------------------------------------------- create

  /** The GroupContext extensions of a new group: RFC 9420 external_senders (the hub) and, unless told not to, ds_protocol_version. */
  static groupExtensions(hubExternalSender: ExternalSender, options: GroupOptions = {}): Extension[] {
    const senders = makeExternalSendersExtension([hubExternalSender]);
    const own = options.dsProtocolVersion === false ? [senders] : [senders, makeDSProtocolVersionExtension(DS_PROTOCOL_VERSION)];
    return [...own, ...(options.extensions ?? [])];
  }

  /** Creates the ts-mls group locally (no DS call). */
  async createLocalGroup(groupId: Uint8Array, hubExternalSender: ExternalSender, options: GroupOptions = {}): Promise<ClientState> {
    const kp = await this.generateKeyPackage();
    this.keyPackages.delete(hex(kp.ref)); // used for the creator's leaf, not for a Welcome
    // Needs a ts-mls that reads RFC 9420 external_senders (patches/ts-mls+1.6.4.patch,
    // upstream PR 476): plain 1.6.4 throws CodecError "Could not decode external_senders".
    return tsCreateGroup(groupId, kp.publicPackage, kp.privatePackage, MimiClient.groupExtensions(hubExternalSender, options), this.cs);
  }

  /**
   * request_group_id, then create_group on the hub with the signed GroupInfo
   * (with external_pub), the ratchet tree and this client's token. The hub's
   * external sender comes from its HubInfo unless given.
   */
  async createGroup(options: GroupOptions & { hub?: DSClient; externalSender?: ExternalSender } = {}, opts?: CallOptions): Promise<MimiGroup> {
    const hub = this.requireHub(options.hub ?? this.hub, "createGroup");
    if (this.token === undefined) throw new Error(`${this.clientId}: register() first (create_group needs the token)`);
    const externalSender = options.externalSender ?? (await hub.hubInfo(this.cipherSuite, opts)).externalSender;
    const groupId = await hub.requestGroupId(undefined, opts);
    const state = await this.createLocalGroup(groupId, externalSender, options);
    const group = new MimiGroup(this, hub, state);
    const gi = await creatorGroupInfo(state, this.cs);
    await hub.createGroup(
      { groupInfo: groupInfoMessage(gi), ratchetTree: encodeRatchetTreeBytes(state.ratchetTree), creatorToken: this.token },
      group.memberAuth(state),
      opts,
    );
    this.groupsById.set(hex(groupId), group);
    return group;
  }

  // ---------------------------------------------------------------- join

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
    throw new Error(`${this.clientId}: the Welcome is for none of this client's KeyPackages`);
  }

  /** Joins with a Welcome and a ratchet tree obtained elsewhere (no DS call). */
  async joinWithTree(welcome: Welcome, ratchetTree: RatchetTree, hub?: DSClient): Promise<MimiGroup> {
    const { kp } = await this.inspectWelcome(welcome);
    const state = await joinGroup(welcome, kp.publicPackage, kp.privatePackage, emptyPskIndex, this.cs, ratchetTree);
    if (!kp.lastResort) this.keyPackages.delete(hex(kp.ref));
    return this.adopt(state, hub ?? this.hubOf(state.groupContext.groupId));
  }

  /**
   * Joins from a Welcome: with the ratchet tree it carries (ratchet_tree
   * extension), else with the tree of welcome_info (joiner-signed with the
   * KeyPackage's key).
   */
  async joinFromWelcome(welcome: Welcome | MLSMessage | Uint8Array, hub?: DSClient, opts?: CallOptions): Promise<MimiGroup> {
    const w = asWelcome(welcome);
    const { kp, groupInfo } = await this.inspectWelcome(w);
    const groupId = groupInfo.groupContext.groupId;
    if (groupInfo.extensions.some((e) => e.extensionType === "ratchet_tree")) {
      const state = await joinGroup(w, kp.publicPackage, kp.privatePackage, emptyPskIndex, this.cs);
      if (!kp.lastResort) this.keyPackages.delete(hex(kp.ref));
      return this.adopt(state, hub ?? this.hubOf(groupId));
    }
    const h = this.requireHub(hub ?? this.hubOf(groupId), "welcome_info");
    const tree = await h.welcomeInfo(
      { groupId, epoch: groupInfo.groupContext.epoch, keyPackageRef: kp.ref },
      { kind: "joiner", keyPackageRef: kp.ref, signaturePrivateKey: kp.privatePackage.signaturePrivateKey, signature: this.cs.signature },
      opts,
    );
    return this.joinWithTree(w, tree, h);
  }

  /** external_commit_info, then an external commit (resync: replace this client's own old leaf). */
  async externalJoin(groupId: Uint8Array, options: { resync?: boolean; hub?: DSClient } = {}, opts?: CallOptions): Promise<MimiGroup> {
    const hub = this.requireHub(options.hub ?? this.hubOf(groupId), "external_join");
    const info = await hub.externalCommitInfo(groupId, undefined, opts);
    if (info.groupInfo.wireformat !== "mls_group_info") throw new Error("external_commit_info without a GroupInfo");
    const kp = await this.generateKeyPackage({ tokenInLeaf: true });
    this.keyPackages.delete(hex(kp.ref));
    const c = await externalJoinCommit(info.groupInfo.groupInfo, info.ratchetTree, kp, options.resync === true, this.cs, this.commitOptions);
    await hub.externalJoin(c.groupUpdate, undefined, opts);
    return this.adopt(c.newState, hub);
  }

  // ---------------------------------------------------------------- incoming

  /**
   * Applies one MLSMessage from the queue: a Welcome joins its group (via
   * welcome_info at the group's hub), anything else goes to the group it names.
   */
  async processIncoming(bytes: Uint8Array | MLSMessage): Promise<ClientIncoming> {
    const msg = bytes instanceof Uint8Array ? decodeMLSMessage(bytes) : bytes;
    if (msg.wireformat === "mls_welcome") {
      const group = await this.joinFromWelcome(msg.welcome);
      return { group, result: { kind: "joined", epoch: group.epoch } };
    }
    const groupId = groupIdOf(msg);
    if (groupId === undefined) throw new Error(`cannot process an MLSMessage of wire format ${msg.wireformat}`);
    const group = this.group(groupId);
    if (group === undefined) return { group: undefined, result: { kind: "unknown_group", groupId } };
    return { group, result: await group.processIncoming(msg) };
  }
}

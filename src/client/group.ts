// MimiGroup: one MLS group of one client, and the hub that hosts it. A
// MimiClient holds one per group it is in, so a client can be in many groups
// on many hubs at once.
//
// Every operation is split in two: `prepareX()` does the MLS work and returns
// a PreparedOperation (the DSRequestBody and the state to adopt), and
// `submit(op)` signs it as this member, sends it, and adopts the state only
// when the hub accepted it: a refused commit (wrong_epoch, lost race) leaves
// the group in its old epoch, ready to process the winning commit instead.
// `X()` is prepare + submit. Application messages are the exception: the
// sender ratchet advances at prepare time, because a generation must never be
// used twice, sent or not.
import {
  type CiphersuiteImpl,
  type CiphersuiteName,
  type ClientState,
  type Extension,
  type FramedContent,
  type KeyPackage,
  type MLSMessage,
  type Proposal,
  type RatchetTree,
  type Welcome,
  acceptAll,
  ciphersuites,
  createApplicationMessage,
  createProposal,
  emptyPskIndex,
  processMessage,
} from "ts-mls";
import { treeHashRoot } from "ts-mls/treeHash.js";
import type { DSRequestBody, FanoutAuthToken, MLSGroupUpdate } from "../wire/index.js";
import type { CallOptions, DSClient } from "./ds.js";
import { UnexpectedResponseError } from "./errors.js";
import { commit as makeCommit, type CommitOptions } from "./group-ops.js";
import type { RequestAuth } from "./sign.js";

/** What a group needs from the client it belongs to. */
export interface GroupOwner {
  readonly clientId: string;
  readonly cipherSuiteName: CiphersuiteName;
  readonly cs: CiphersuiteImpl;
  readonly signatureKeyPair: { readonly publicKey: Uint8Array; readonly signKey: Uint8Array };
  /** The client's FanoutAuthToken (update_client may replace it). */
  token: FanoutAuthToken | undefined;
  /** The group ended for this client (deleted): drop it from the client's groups. */
  forget(group: MimiGroup): void;
  /** What its commits carry (the Welcome's and the GroupInfo's ratchet tree). */
  readonly commitOptions: CommitOptions;
  /** How it signs requests as itself at its own DS (key_packages). */
  registeredAuth(): RequestAuth;
}

/** What processIncoming did. */
export type IncomingResult =
  | { readonly kind: "application"; readonly data: Uint8Array; readonly text: string }
  | { readonly kind: "commit"; readonly epoch: bigint; readonly removed: boolean }
  | { readonly kind: "proposal" }
  | { readonly kind: "joined"; readonly epoch: bigint }
  /** A handshake message of an epoch this member already left (e.g. its own commit echoed back). */
  | { readonly kind: "stale"; readonly epoch: bigint };

export type OperationKind =
  | "add"
  | "remove"
  | "update"
  | "commit_pending"
  | "self_remove"
  | "delete"
  | "reinitialize"
  | "send";

/** A prepared commit: its MLSGroupUpdate, and the state of the epoch it starts. */
export type PreparedCommitOperation = PreparedOperation & { readonly groupUpdate: MLSGroupUpdate; readonly newState: ClientState };

/** One prepared group operation: submit it with MimiGroup.submit. */
export interface PreparedOperation {
  readonly kind: OperationKind;
  readonly groupId: Uint8Array;
  /** The epoch it was prepared in: submit refuses it in any other. */
  readonly epoch: bigint;
  /** The DSRequestBody (signed by the member at submit time). */
  readonly body: DSRequestBody;
  /** The MLS message inside the body: a commit, a proposal or an application message. */
  readonly message: MLSMessage;
  /** The state to adopt once accepted; undefined for delete (the group is gone). */
  readonly newState: ClientState | undefined;
  /** For commits that add members: the Welcome (also fanned out by the hub). */
  readonly welcome?: Welcome;
  /** For update: the FanoutAuthToken the member switches to. */
  readonly newToken?: FanoutAuthToken;
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

export function welcomeMessage(w: Welcome): MLSMessage {
  return { version: "mls10", wireformat: "mls_welcome", welcome: w };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class MimiGroup {
  private current: ClientState | undefined;
  /**
   * Every read-modify-write of the state runs here, one at a time: a Receiver
   * applying a message while the app sends one must not lose either's ratchet
   * step (a lost sender step would reuse a generation, hence a nonce).
   */
  private turn: Promise<void> = Promise.resolve();
  /** The MLS group_id (kept after the group is deleted). */
  readonly groupId: Uint8Array;

  constructor(
    private readonly owner: GroupOwner,
    /**
     * The hub hosting this group (undefined: a local-only group, nothing can be
     * submitted). Replaceable, e.g. by a DSClient to another instance of the hub.
     */
    public hub: DSClient | undefined,
    state: ClientState,
  ) {
    this.current = state;
    this.groupId = state.groupContext.groupId;
  }

  /** The ts-mls state of the current epoch; undefined once the group was deleted. */
  get state(): ClientState | undefined {
    return this.current;
  }

  /** Replaces the state (for tests and recovery; it must be this group's). */
  set state(state: ClientState | undefined) {
    if (state !== undefined && !sameBytes(state.groupContext.groupId, this.groupId)) {
      throw new Error("a MimiGroup's state must keep its group id");
    }
    this.current = state;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private requireState(): ClientState {
    if (this.current === undefined) throw new Error(`${this.owner.clientId}: the group is gone (deleted)`);
    return this.current;
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

  get ratchetTree(): RatchetTree {
    return this.requireState().ratchetTree;
  }

  /** False once a commit removed this member (its state stays in the last epoch it saw). */
  get active(): boolean {
    return this.current !== undefined && this.current.groupActiveState.kind !== "removedFromGroup";
  }

  /** Recomputes the tree hash from the ratchet tree (should equal treeHash). */
  computeTreeHash(): Promise<Uint8Array> {
    return treeHashRoot(this.requireState().ratchetTree, this.owner.cs.hash);
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

  /** This member's DSRequest authentication (client_signature with its leaf key). */
  memberAuth(state: ClientState = this.requireState()): RequestAuth {
    return {
      kind: "member",
      senderIndex: state.privatePath.leafIndex,
      signaturePrivateKey: this.owner.signatureKeyPair.signKey,
      signature: this.owner.cs.signature,
    };
  }

  // ---------------------------------------------------------------- prepare

  private operation(
    kind: OperationKind,
    body: DSRequestBody,
    message: MLSMessage,
    newState: ClientState | undefined,
    extra: { welcome?: Welcome; newToken?: FanoutAuthToken } = {},
  ): PreparedOperation {
    const state = this.requireState();
    return {
      kind,
      groupId: state.groupContext.groupId,
      epoch: state.groupContext.epoch,
      body,
      message,
      newState,
      ...(extra.welcome !== undefined ? { welcome: extra.welcome } : {}),
      ...(extra.newToken !== undefined ? { newToken: extra.newToken } : {}),
    };
  }

  private commitOf(proposals: Proposal[]) {
    return this.exclusive(() => makeCommit(this.requireState(), this.owner.cs, proposals, this.owner.commitOptions));
  }

  /** add_clients: a commit adding `keyPackages`, with its Welcome. */
  async prepareAdd(keyPackages: readonly KeyPackage[]): Promise<PreparedCommitOperation & { readonly welcome: Welcome }> {
    const c = await this.commitOf(keyPackages.map((keyPackage) => ({ proposalType: "add", add: { keyPackage } })));
    if (c.welcome === undefined) throw new Error("an Add commit without a Welcome");
    const body: DSRequestBody = {
      requestType: "add_clients",
      addClientsRequest: { groupUpdate: c.groupUpdate, welcomeMessages: [welcomeMessage(c.welcome)] },
    };
    const op = this.operation("add", body, c.groupUpdate.commit, c.newState, { welcome: c.welcome });
    return { ...op, welcome: c.welcome, groupUpdate: c.groupUpdate, newState: c.newState };
  }

  /** remove_clients: a commit removing the given members (client ids or leaf indices). */
  async prepareRemove(targets: readonly (number | string)[]): Promise<PreparedCommitOperation> {
    const c = await this.commitOf(this.resolveLeaves(targets).map((removed) => ({ proposalType: "remove", remove: { removed } })));
    const body: DSRequestBody = { requestType: "remove_clients", removeClientsRequest: { groupUpdate: c.groupUpdate } };
    return { ...this.operation("remove", body, c.groupUpdate.commit, c.newState), groupUpdate: c.groupUpdate, newState: c.newState };
  }

  /** update_client: an empty commit with a path (fresh leaf key), optionally switching to a new FanoutAuthToken. */
  async prepareUpdate(newToken?: FanoutAuthToken): Promise<PreparedCommitOperation> {
    const c = await this.commitOf([]);
    const updateClientRequest = newToken === undefined ? { groupUpdate: c.groupUpdate } : { groupUpdate: c.groupUpdate, token: newToken };
    const body: DSRequestBody = { requestType: "update_client", updateClientRequest };
    const extra = newToken !== undefined ? { newToken } : {};
    return { ...this.operation("update", body, c.groupUpdate.commit, c.newState, extra), groupUpdate: c.groupUpdate, newState: c.newState };
  }

  /**
   * A commit of every stored proposal by reference. Sent as add_clients when
   * the pending proposals add someone (with the Welcome), else remove_clients
   * when they remove someone, else update_client.
   */
  async prepareCommitPending(): Promise<PreparedCommitOperation> {
    const pending = Object.values(this.requireState().unappliedProposals).map((p) => p.proposal.proposalType);
    const c = await this.commitOf([]);
    let body: DSRequestBody;
    if (pending.includes("add")) {
      body = {
        requestType: "add_clients",
        addClientsRequest: { groupUpdate: c.groupUpdate, welcomeMessages: c.welcome ? [welcomeMessage(c.welcome)] : [] },
      };
    } else if (pending.includes("remove")) {
      body = { requestType: "remove_clients", removeClientsRequest: { groupUpdate: c.groupUpdate } };
    } else {
      body = { requestType: "update_client", updateClientRequest: { groupUpdate: c.groupUpdate } };
    }
    const extra = c.welcome !== undefined ? { welcome: c.welcome } : {};
    return { ...this.operation("commit_pending", body, c.groupUpdate.commit, c.newState, extra), groupUpdate: c.groupUpdate, newState: c.newState };
  }

  /**
   * self_remove_client: a PublicMessage Remove proposal of this member's own
   * leaf (draft -05; ts-mls 1.6.4 cannot build a SelfRemove proposal); another
   * member's next commit removes it.
   */
  async prepareSelfRemove(): Promise<PreparedOperation & { readonly newState: ClientState }> {
    const res = await this.exclusive(() => {
      const state = this.requireState();
      return createProposal(state, true, { proposalType: "remove", remove: { removed: state.privatePath.leafIndex } }, this.owner.cs);
    });
    const body: DSRequestBody = { requestType: "self_remove_client", selfRemoveClientRequest: { proposal: res.message } };
    return { ...this.operation("self_remove", body, res.message, res.newState), newState: res.newState };
  }

  /** delete_group: a commit removing every other member. */
  async prepareDelete(): Promise<PreparedOperation & { readonly groupUpdate: MLSGroupUpdate }> {
    const me = this.leafIndex;
    const others = this.members().filter((m) => m.leafIndex !== me).map((m) => m.leafIndex);
    const c = await this.commitOf(others.map((removed) => ({ proposalType: "remove", remove: { removed } })));
    const body: DSRequestBody = { requestType: "delete_group", deleteGroupRequest: { groupUpdate: c.groupUpdate } };
    return { ...this.operation("delete", body, c.groupUpdate.commit, undefined), groupUpdate: c.groupUpdate };
  }

  /** reinitialize_group: a commit with a ReInit proposal to `newGroupId` (same version and suite). */
  async prepareReinitialize(newGroupId: Uint8Array, extensions: Extension[] = []): Promise<PreparedCommitOperation> {
    const gc = this.requireState().groupContext;
    const c = await this.commitOf([
      { proposalType: "reinit", reinit: { groupId: newGroupId, version: gc.version, cipherSuite: gc.cipherSuite, extensions } },
    ]);
    const body: DSRequestBody = { requestType: "reinitialize_group", reInitializeGroupRequest: { commit: c.groupUpdate } };
    return { ...this.operation("reinitialize", body, c.groupUpdate.commit, c.newState), groupUpdate: c.groupUpdate, newState: c.newState };
  }

  /**
   * send_message: a PrivateMessage application message. The sender ratchet
   * advances now (the state is adopted here, not at submit), so two prepared
   * messages never share a generation.
   */
  prepareSend(text: string | Uint8Array): Promise<PreparedOperation & { readonly newState: ClientState }> {
    const data = typeof text === "string" ? utf8.encode(text) : text;
    return this.exclusive(async () => {
      const res = await createApplicationMessage(this.requireState(), data, this.owner.cs);
      const message: MLSMessage = { version: "mls10", wireformat: "mls_private_message", privateMessage: res.privateMessage };
      const body: DSRequestBody = { requestType: "send_message", sendMessageRequest: { applicationMessage: message } };
      const op = { ...this.operation("send", body, message, res.newState), newState: res.newState };
      this.current = res.newState;
      return op;
    });
  }

  // ---------------------------------------------------------------- submit

  /**
   * Signs `op` as this member, submits it to the hub and, once accepted,
   * adopts its state (delete: the group is gone and leaves its client). A DS
   * refusal throws DSRequestError and changes nothing here.
   */
  async submit(op: PreparedOperation, opts?: CallOptions): Promise<void> {
    const state = this.requireState();
    if (!sameBytes(op.groupId, state.groupContext.groupId)) throw new Error("the operation was prepared for another group");
    if (op.epoch !== state.groupContext.epoch) {
      throw new Error(`the operation was prepared in epoch ${op.epoch}; the group is at epoch ${state.groupContext.epoch}: prepare it again`);
    }
    if (this.hub === undefined) throw new Error(`${this.owner.clientId}: no hub DSClient for this group`);
    const res = await this.hub.request(op.body, this.memberAuth(op.kind === "send" && op.newState ? op.newState : state), opts);
    if (res.responseType !== "ok") {
      throw new UnexpectedResponseError(`${op.body.requestType} answered with ${res.responseType}, expected ok`, "ok", res.responseType);
    }
    if (op.kind === "send") return; // adopted at prepare time
    await this.exclusive(async () => {
      // Only application messages of the old epoch can have been applied meanwhile
      // (the hub accepted this commit, so no other one for its epoch exists).
      if (this.current?.groupContext.epoch !== op.epoch) return;
      this.current = op.newState;
      if (op.newToken !== undefined) this.owner.token = op.newToken;
      if (op.kind === "delete") this.owner.forget(this);
    });
  }

  async add(keyPackages: readonly KeyPackage[], opts?: CallOptions): Promise<Welcome> {
    const op = await this.prepareAdd(keyPackages);
    await this.submit(op, opts);
    return op.welcome;
  }

  /** Fetches KeyPackages for `clientIds` from the hub (key_packages) and adds them. */
  async addClients(clientIds: readonly string[], opts?: CallOptions): Promise<Welcome> {
    if (this.hub === undefined) throw new Error(`${this.owner.clientId}: no hub DSClient for this group`);
    // Fetched as this client, registered at the DS `hub` reaches (its own): anonymous fetches are refused (docs/security.md).
    const kps = await this.hub.keyPackages(clientIds, [ciphersuites[this.owner.cipherSuiteName]], this.owner.registeredAuth());
    return this.add(kps, opts);
  }

  remove(targets: readonly (number | string)[], opts?: CallOptions): Promise<void> {
    return this.prepareRemove(targets).then((op) => this.submit(op, opts));
  }

  update(newToken?: FanoutAuthToken, opts?: CallOptions): Promise<void> {
    return this.prepareUpdate(newToken).then((op) => this.submit(op, opts));
  }

  commitPending(opts?: CallOptions): Promise<void> {
    return this.prepareCommitPending().then((op) => this.submit(op, opts));
  }

  selfRemove(opts?: CallOptions): Promise<void> {
    return this.prepareSelfRemove().then((op) => this.submit(op, opts));
  }

  delete(opts?: CallOptions): Promise<void> {
    return this.prepareDelete().then((op) => this.submit(op, opts));
  }

  reinitialize(newGroupId: Uint8Array, extensions: Extension[] = [], opts?: CallOptions): Promise<void> {
    return this.prepareReinitialize(newGroupId, extensions).then((op) => this.submit(op, opts));
  }

  send(text: string | Uint8Array, opts?: CallOptions): Promise<void> {
    return this.prepareSend(text).then((op) => this.submit(op, opts));
  }

  // ---------------------------------------------------------------- incoming

  /** Applies a commit, proposal or application message of this group (Welcomes go to MimiClient). */
  processIncoming(msg: MLSMessage): Promise<IncomingResult> {
    return this.exclusive(() => this.apply(msg));
  }

  private async apply(msg: MLSMessage): Promise<IncomingResult> {
    if (msg.wireformat !== "mls_public_message" && msg.wireformat !== "mls_private_message") {
      throw new Error(`cannot process an MLSMessage of wire format ${msg.wireformat} in a group`);
    }
    const state = this.requireState();
    if (msg.wireformat === "mls_public_message" && msg.publicMessage.content.epoch < state.groupContext.epoch) {
      return { kind: "stale", epoch: msg.publicMessage.content.epoch };
    }
    const res = await processMessage(msg, state, emptyPskIndex, acceptAll, this.owner.cs);
    this.current = res.newState;
    if (res.kind === "applicationMessage") return { kind: "application", data: res.message, text: utf8d.decode(res.message) };
    const newEpoch = res.newState.groupContext.epoch;
    // A commit removing this member leaves its state in the old epoch, marked removed.
    const removed = res.newState.groupActiveState.kind === "removedFromGroup";
    if (removed) return { kind: "commit", epoch: state.groupContext.epoch + 1n, removed };
    if (newEpoch === state.groupContext.epoch) return { kind: "proposal" };
    return { kind: "commit", epoch: newEpoch, removed };
  }
}

/** The group id an MLSMessage belongs to (handshake and application messages; undefined for others). */
export function groupIdOf(msg: MLSMessage): Uint8Array | undefined {
  if (msg.wireformat === "mls_public_message") return (msg.publicMessage.content as FramedContent).groupId;
  if (msg.wireformat === "mls_private_message") return msg.privateMessage.groupId;
  return undefined;
}

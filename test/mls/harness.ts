// A group of real ts-mls clients (PublicMessage handshakes) mirrored by the engine.
import { expect } from "vitest";
import {
  acceptAll,
  createCommit,
  createGroup,
  createProposal,
  decodeMlsMessage,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackage,
  generateKeyPackageWithKey,
  joinGroup,
  joinGroupExternal,
  processMessage,
  type CiphersuiteImpl,
  type ClientState,
  type Extension,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
  type Proposal,
  type Capabilities,
  type Lifetime,
} from "ts-mls";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import { groupInfoEncoder } from "ts-mls/groupInfo.js";
import { createGroupInfoWithExternalPub } from "ts-mls";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { varLenTypeEncoder } from "ts-mls/codec/variableLength.js";
import { extensionEncoder } from "ts-mls/extension.js";
import { decodeRatchetTree } from "ts-mls/ratchetTree.js";
import { credentialEncoder } from "ts-mls/credential.js";
import { decodeGroupInfo } from "ts-mls/groupInfo.js";
import { concat, varLen } from "../../src/mls/codec.js";
import { apply, merge, processMessage as engineProcess, seedFromGroupInfo, type GroupState, type Staged } from "../../src/mls/group.js";
import { groupInfoBytes, ratchetTreeBytes } from "../../src/mls/state.js";
import { toHex } from "./helpers.js";

export interface Identity {
  readonly name: string;
  readonly kp: KeyPackage;
  readonly priv: PrivateKeyPackage;
  readonly sig: { publicKey: Uint8Array; signKey: Uint8Array };
}

const te = new TextEncoder();

/** RFC 9420 external_senders extension (vector form), written independently of ts-mls. */
export function externalSendersExtension(senders: { signaturePublicKey: Uint8Array; identity: string }[]): Extension {
  const items = senders.map((s) => concat(varLen(s.signaturePublicKey), encode(credentialEncoder)({ credentialType: "basic", identity: te.encode(s.identity) })));
  return { extensionType: "external_senders", extensionData: varLen(concat(...items)) };
}

export const mlsBytes = (m: MLSMessage): Uint8Array => encodeMlsMessage(m);

/** PartialGroupInfo (draft Section 7) as a committer would send it: extensions (with external_pub) and signature. */
export async function partialGroupInfoOf(state: ClientState, cs: CiphersuiteImpl, extra: Extension[] = []): Promise<Uint8Array> {
  const gi = await createGroupInfoWithExternalPub(state, extra, cs);
  return concat(encode(varLenTypeEncoder(extensionEncoder))(gi.extensions), varLen(gi.signature));
}

export class Harness {
  engine!: GroupState;
  readonly members = new Map<string, ClientState>();
  readonly ids = new Map<string, Identity>();
  readonly log: string[] = [];
  constructor(
    readonly cs: CiphersuiteImpl,
    readonly groupId = te.encode("group-" + Math.random().toString(16).slice(2)),
  ) {}

  async identity(name: string, o: { capabilities?: Capabilities; lifetime?: Lifetime; sig?: Identity["sig"]; leafExtensions?: Extension[] } = {}): Promise<Identity> {
    const cred = { credentialType: "basic" as const, identity: te.encode(name) };
    const caps = o.capabilities ?? defaultCapabilities();
    const lifetime = o.lifetime ?? defaultLifetime;
    const sig = o.sig ?? (await this.cs.signature.keygen());
    const { publicPackage, privatePackage } = await generateKeyPackageWithKey(cred, caps, lifetime, [], sig, this.cs, o.leafExtensions);
    const id = { name, kp: publicPackage, priv: privatePackage, sig };
    this.ids.set(name, id);
    return id;
  }

  async create(creator: string, extensions: Extension[] = [], capabilities?: Capabilities): Promise<void> {
    const id = await this.identity(creator, capabilities ? { capabilities } : {});
    const state = await createGroup(this.groupId, id.kp, id.priv, extensions, this.cs);
    this.members.set(creator, state);
    // The hub is seeded from a signed GroupInfo and the tree, as a DS would be.
    const gi = await createGroupInfoWithExternalPub(state, [], this.cs);
    const giBytes = encode(groupInfoEncoder)(gi);
    const { encodeRatchetTree } = await import("ts-mls/ratchetTree.js");
    this.engine = await seedFromGroupInfo(giBytes, encodeRatchetTree(state.ratchetTree));
    this.assertSynced();
  }

  state(name: string): ClientState {
    const s = this.members.get(name);
    if (s === undefined) throw new Error(`no member ${name}`);
    return s;
  }

  /** Deliver a handshake message to every member except `except`. */
  async deliver(msg: MLSMessage, except: string[]): Promise<void> {
    for (const [n, s] of this.members) {
      if (except.includes(n)) continue;
      const r = await processMessage(msg as never, s, emptyPskIndex, acceptAll, this.cs);
      if (r.newState.groupActiveState.kind === "removedFromGroup") this.members.delete(n);
      else this.members.set(n, r.newState);
    }
  }

  async propose(sender: string, proposal: Proposal): Promise<Staged> {
    const { newState, message } = await createProposal(this.state(sender), true, proposal, this.cs);
    this.members.set(sender, newState);
    const staged = await engineProcess(this.engine, mlsBytes(message));
    this.engine = await merge(this.engine, staged);
    await this.deliver(message, [sender]);
    return staged;
  }

  /** Commit from a member; the engine stages, checks and merges with the PartialGroupInfo; joiners use the engine's tree. */
  async commit(committer: string, extraProposals: Proposal[] = [], joiners: Identity[] = []): Promise<Staged> {
    const r = await createCommit({ state: this.state(committer), cipherSuite: this.cs }, { wireAsPublicMessage: true, extraProposals });
    const bytes = mlsBytes(r.commit);
    const staged = await engineProcess(this.engine, bytes);
    const pgi = r.newState.groupActiveState.kind === "active" ? await partialGroupInfoOf(r.newState, this.cs) : undefined;
    this.engine = await merge(this.engine, staged, pgi);
    await this.deliver(r.commit, [committer]);
    if (r.newState.groupActiveState.kind !== "removedFromGroup") this.members.set(committer, r.newState);
    if (r.welcome !== undefined) {
      const tree = decodeRatchetTree(ratchetTreeBytes(this.engine), 0)![0];
      for (const j of joiners) {
        const s = await joinGroup(r.welcome, j.kp, j.priv, emptyPskIndex, this.cs, tree);
        this.members.set(j.name, s);
      }
    }
    this.assertSynced();
    await this.assertReseedable();
    return staged;
  }

  /** External join (or resync) from the GroupInfo and tree the engine serves. */
  async externalJoin(id: Identity, resync = false): Promise<Staged> {
    const giBytes = groupInfoBytes(this.engine);
    if (giBytes === undefined) throw new Error("engine has no GroupInfo");
    const gi = decodeGroupInfo(giBytes, 0)![0];
    const tree = decodeRatchetTree(ratchetTreeBytes(this.engine), 0)![0];
    if (resync) this.members.delete(id.name);
    const { publicMessage, newState } = await joinGroupExternal(gi, id.kp, id.priv, resync, this.cs, tree);
    const msg: MLSMessage = { version: "mls10", wireformat: "mls_public_message", publicMessage };
    const staged = await engineProcess(this.engine, mlsBytes(msg));
    this.engine = await merge(this.engine, staged, await partialGroupInfoOf(newState, this.cs));
    await this.deliver(msg, []);
    this.members.set(id.name, newState);
    this.assertSynced();
    return staged;
  }

  leafOf(name: string): number {
    return this.state(name).privatePath.leafIndex;
  }

  /** A second engine seeded from the GroupInfo and tree this one serves must agree with it. */
  async assertReseedable(): Promise<void> {
    const gi = groupInfoBytes(this.engine);
    if (gi === undefined) return;
    const other = await seedFromGroupInfo(gi, ratchetTreeBytes(this.engine));
    expect(toHex(other.groupContextBytes)).toBe(toHex(this.engine.groupContextBytes));
    expect(toHex(other.interimTranscriptHash)).toBe(toHex(this.engine.interimTranscriptHash));
  }

  assertSynced(): void {
    const e = toHex(this.engine.groupContextBytes);
    for (const [n, s] of this.members) {
      expect(toHex(encodeGroupContext(s.groupContext)), `GroupContext of ${n} at epoch ${s.groupContext.epoch}`).toBe(e);
    }
  }
}

export { apply, decodeMlsMessage, generateKeyPackage };

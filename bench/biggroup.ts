// Groups of 100,000 members for the engine and commit benches. ts-mls cannot
// build them in a bench's time (a ts-mls member needs about 9 s to process one
// add to 10,000 members, and its commits and KeyPackage generation scale
// alike), so:
//
// - KeyPackages are made with ts-mls's own KeyPackage code (structure,
//   encodings, signatures) on a ciphersuite whose key generation and signing
//   run on node:crypto: real X25519 HPKE keys, real Ed25519 signature keys,
//   real signatures. Made once and cached in bench/.cache/.
// - The creator (leaf 0) is a `Committer`: it knows the group through its own
//   public engine state, signs its commits (PublicMessage, RFC 9420 6.1), its
//   GroupInfo and PartialGroupInfos (GroupInfoTBS of the new epoch, which it
//   computes with the engine as any member computes it), and its DSRequests.
//   What it cannot make without secrets it fills with random bytes: the
//   confirmation and membership tags, the Welcome's encrypted parts and an
//   application message's ciphertext. The DS cannot check those either.
import { createPrivateKey, createPublicKey, randomBytes, sign as nodeSign } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import {
  decodeMlsMessage,
  defaultCapabilities,
  defaultLifetime,
  encodeMlsMessage,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  type CiphersuiteImpl,
  type Extension,
  type GroupContext,
  type KeyPackage,
  type MLSMessage,
} from "ts-mls";
import { createContentCommitSignature } from "ts-mls/framedContent.js";
import { signGroupInfo } from "ts-mls/groupInfo.js";
import { signWithLabel } from "ts-mls/crypto/signature.js";
import { decodeKeyPackage, encodeKeyPackage, makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { groupInfoEncoder } from "ts-mls/groupInfo.js";
import { buildDSRequest, MIMI_CAPABILITY_EXTENSIONS, type RequestAuth } from "../src/client/index.js";
import { nodeCryptoProvider } from "../src/mls/crypto.js";
import { merge, processMessage, seedFromGroupInfo, type GroupState, type StagedCommit } from "../src/mls/group.js";
import { ratchetTreeBytes } from "../src/mls/state.js";
import { PublicTree } from "../src/mls/tree.js";
import { engineCrypto } from "../src/mls/crypto.js";
import {
  DS_PROTOCOL_VERSION,
  encodeDSRequest,
  makeDSSupportedVersionsExtension,
  makeFanoutAuthExtension,
  type DSRequestBody,
} from "../src/wire/index.js";
import { log, repoRoot } from "./lib.js";

export const SUITE = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519" as const;
/** Members generated beyond a group's size (fresh joiners of add-1 commits); the engine and commit benches share one cache. */
export const SPARE_MEMBERS = 100;
const CACHE = join(repoRoot, "bench", ".cache");
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** ts-mls's ciphersuite with key generation and signing on node:crypto (verification is already there). */
// Keys come from random seeds through createPrivateKey/createPublicKey and a DER
// export: Node 20's generateKeyPairSync followed by a JWK export can deadlock
// in a garbage collection (a KeyGenJob destructor waits on a lock), which
// stopped 100,000-key runs after some 20,000 keys.
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

function keyPair(prefix: Buffer): { publicKey: Uint8Array; privateKey: Uint8Array } {
  const seed = randomBytes(32);
  const priv = createPrivateKey({ key: Buffer.concat([prefix, seed]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(priv).export({ format: "der", type: "spki" });
  return { publicKey: new Uint8Array(spki.subarray(spki.length - 32)), privateKey: new Uint8Array(seed) };
}

/** ts-mls's ciphersuite with key generation and signing on node:crypto (verification is already there). */
export async function fastSuite(): Promise<CiphersuiteImpl> {
  const base = await getCiphersuiteImpl(getCiphersuiteFromName(SUITE), nodeCryptoProvider);
  const keys = new Map<string, ReturnType<typeof createPrivateKey>>();
  return {
    ...base,
    hpke: {
      ...base.hpke,
      // Raw X25519 keys stand for ts-mls's key objects: only exported here.
      generateKeyPair: async () => keyPair(X25519_PKCS8_PREFIX) as never,
      exportPublicKey: async (k: unknown) => k as Uint8Array,
      exportPrivateKey: async (k: unknown) => k as Uint8Array,
    },
    signature: {
      ...base.signature,
      keygen: async () => {
        const k = keyPair(ED25519_PKCS8_PREFIX);
        return { publicKey: k.publicKey, signKey: k.privateKey };
      },
      sign: async (signKey: Uint8Array, message: Uint8Array) => {
        const id = Buffer.from(signKey).toString("base64");
        let key = keys.get(id);
        if (key === undefined) {
          key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, signKey]), format: "der", type: "pkcs8" });
          if (keys.size > 4) keys.clear();
          keys.set(id, key);
        }
        return new Uint8Array(nodeSign(null, message, key));
      },
    },
  };
}

/** A member as stored: its KeyPackage is decoded when asked for, each time (100,000 decoded ones would take gigabytes). */
export class BigMember {
  constructor(
    readonly clientId: string,
    readonly keyPackageBytes: Uint8Array,
    /** Raw Ed25519 private key (seed) of its leaf. */
    readonly signKey: Uint8Array,
  ) {}

  get keyPackage(): KeyPackage {
    return decodeKeyPackage(this.keyPackageBytes, 0)![0];
  }
}

function lv(b: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/**
 * `n` members of `domain` with one KeyPackage each as a MimiMember makes it
 * (FanoutAuth extension with a random token, MIMI capabilities,
 * ds_supported_versions in the leaf); cached in bench/.cache/.
 */
export async function bigMembers(n: number, domain: string, tag = "m"): Promise<BigMember[]> {
  // A cached set at least this big serves too (its first n members).
  const prefix = `big-kps-${domain}-${tag}-`;
  const sizes = existsSync(CACHE)
    ? readdirSync(CACHE)
        .filter((f) => f.startsWith(prefix) && f.endsWith(".bin"))
        .map((f) => Number(f.slice(prefix.length, -4)))
        .filter((k) => Number.isInteger(k) && k >= n)
        .sort((a, b) => a - b)
    : [];
  const file = join(CACHE, `${prefix}${sizes[0] ?? n}.bin`);
  if (existsSync(file)) {
    const out = readMembers(readFileSync(file));
    if (out.length >= n) return out.slice(0, n);
  }
  // Generated in chunks appended to a partial file, so an interrupted run resumes where it stopped.
  const partial = `${join(CACHE, `${prefix}${n}`)}.partial`;
  mkdirSync(CACHE, { recursive: true });
  const out: BigMember[] = existsSync(partial) ? readMembers(readFileSync(partial)) : [];
  const cs = await fastSuite();
  const t = performance.now();
  const from = out.length;
  while (out.length < n) {
    const chunk: BigMember[] = [];
    for (let i = out.length; i < Math.min(n, out.length + 5000); i++) {
      const clientId = `mimi://${domain}/u/${tag}${i}/d/1`;
      const sig = await cs.signature.keygen();
      const { publicPackage } = await generateKeyPackageWithKey(
        { credentialType: "basic", identity: new TextEncoder().encode(clientId) },
        { ...defaultCapabilities(), extensions: [...MIMI_CAPABILITY_EXTENSIONS] },
        defaultLifetime,
        [makeFanoutAuthExtension({ token: randomBytes(16) })],
        sig,
        cs,
        [makeDSSupportedVersionsExtension([DS_PROTOCOL_VERSION])],
      );
      chunk.push(new BigMember(clientId, encodeKeyPackage(publicPackage), sig.signKey));
    }
    appendFileSync(partial, encodeMembers(chunk));
    out.push(...chunk);
    log(`  generated ${out.length}/${n} KeyPackages (${((performance.now() - t) / 1000).toFixed(0)} s)`);
  }
  renameSync(partial, file);
  log(`  ${n - from} KeyPackages generated in ${((performance.now() - t) / 1000).toFixed(0)} s, cached in ${file}`);
  return out;
}

const encodeMembers = (ms: readonly BigMember[]): Buffer =>
  Buffer.concat(ms.flatMap((m) => [lv(new TextEncoder().encode(m.clientId)), lv(m.keyPackageBytes), lv(m.signKey)]));

function readMembers(b: Buffer): BigMember[] {
  const out: BigMember[] = [];
  for (let o = 0; o + 4 <= b.length; ) {
    const parts: Uint8Array[] = [];
    for (let k = 0; k < 3; k++) {
      const len = b.readUInt32BE(o);
      parts.push(new Uint8Array(b.subarray(o + 4, o + 4 + len)));
      o += 4 + len;
    }
    out.push(new BigMember(new TextDecoder().decode(parts[0]!), parts[1]!, parts[2]!));
  }
  return out;
}

/** `optional<Node> ratchet_tree<V>` with the members' leaves in order and blank parents (after one big Add commit without path). */
export function treeOf(members: readonly BigMember[]): Uint8Array {
  // KeyPackage = version(2) suite(2) init_key<V> leaf_node extensions<V> signature<V>: the leaf node is cut out.
  const leaves = members.map((m) => leafBytes(m.keyPackageBytes));
  const nodes: Uint8Array[] = [];
  leaves.forEach((l, i) => {
    if (i > 0) nodes.push(Uint8Array.of(0)); // blank parent between leaves
    nodes.push(Buffer.concat([Uint8Array.of(1, 1), l]));
  });
  const body = Buffer.concat(nodes);
  return new Uint8Array(Buffer.concat([varint(body.length), body]));
}

function varint(n: number): Uint8Array {
  if (n < 0x40) return Uint8Array.of(n);
  if (n < 0x4000) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  return Uint8Array.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

function readVarint(b: Uint8Array, o: number): [number, number] {
  const p = b[o]! >> 6;
  if (p === 0) return [b[o]!, 1];
  if (p === 1) return [((b[o]! & 0x3f) << 8) | b[o + 1]!, 2];
  return [(b[o]! & 0x3f) * 0x1000000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!), 4];
}

/** The LeafNode bytes inside an encoded KeyPackage: after version, suite and init_key, up to the extensions and signature. */
function leafBytes(kp: Uint8Array): Uint8Array {
  let o = 4;
  const [initLen, h] = readVarint(kp, o);
  o += h + initLen;
  const start = o;
  // LeafNode: encryption_key<V> signature_key<V> credential capabilities leaf_node_source(+lifetime) extensions<V> signature<V>.
  const skipV = () => {
    const [l, hh] = readVarint(kp, o);
    o += hh + l;
  };
  skipV(); // encryption_key
  skipV(); // signature_key
  // credential: type(2) then identity<V> (basic)
  o += 2;
  skipV();
  // capabilities: versions<V> cipher_suites<V> extensions<V> proposals<V> credentials<V>
  for (let i = 0; i < 5; i++) skipV();
  const source = kp[o]!;
  o += 1;
  if (source !== 1) throw new Error("expected a key_package leaf");
  o += 16; // lifetime
  skipV(); // extensions
  skipV(); // signature
  return kp.subarray(start, o);
}

export interface Seeded {
  readonly groupInfo: Uint8Array;
  readonly ratchetTree: Uint8Array;
}

/**
 * The creator (leaf 0) of a group and its view of it. `groupExtensions` go to
 * the GroupContext (the MIMI extensions with the hub as external sender, for a DS).
 */
export class Committer {
  state: GroupState | undefined;
  readonly auth: RequestAuth;

  private constructor(
    readonly me: BigMember,
    readonly cs: CiphersuiteImpl,
    readonly groupId: Uint8Array,
  ) {
    this.auth = { kind: "member", senderIndex: 0, signaturePrivateKey: me.signKey, signature: cs.signature };
  }

  static async create(me: BigMember, groupId: Uint8Array): Promise<Committer> {
    return new Committer(me, await fastSuite(), groupId);
  }

  /** A GroupInfo (epoch `epoch`) and tree for `members` (the first is this creator), and the engine state seeded from them ("trusted": our own). */
  async seed(members: readonly BigMember[], groupExtensions: Extension[], epoch = 1n): Promise<Seeded> {
    if (members[0] !== this.me) throw new Error("the creator is the first member");
    const ratchetTree = treeOf(members);
    const crypto = await engineCrypto(SUITE);
    const treeHash = PublicTree.decode(ratchetTree, crypto, { uniqueClientIds: true }).rootHash;
    const groupContext: GroupContext = {
      version: "mls10",
      cipherSuite: SUITE,
      groupId: this.groupId,
      epoch,
      treeHash,
      confirmedTranscriptHash: epoch === 0n ? new Uint8Array() : randomBytes(32),
      extensions: groupExtensions,
    };
    const gi = await signGroupInfo({ groupContext, extensions: [], confirmationTag: randomBytes(32), signer: 0 }, this.me.signKey, this.cs.signature);
    const groupInfo = encode(groupInfoEncoder)(gi);
    this.state = await seedFromGroupInfo(groupInfo, ratchetTree, { verify: "trusted" });
    return { groupInfo, ratchetTree };
  }

  groupInfoMessage(groupInfo: Uint8Array): MLSMessage {
    return { version: "mls10", wireformat: "mls_group_info", groupInfo: decodeGroupInfoStruct(groupInfo) };
  }

  /**
   * An add commit (by value, no path) of this member, staged on its own state
   * (not merged: `accept` merges it), with the PartialGroupInfo of the new
   * epoch and a Welcome naming every joiner's KeyPackageRef.
   */
  async addCommit(joiners: readonly KeyPackage[]): Promise<{ commit: MLSMessage; commitBytes: Uint8Array; welcome: MLSMessage; staged: StagedCommit; partial: { groupInfoExtensions: Extension[]; signature: Uint8Array } }> {
    const state = this.requireState();
    const gc = state.groupContext as GroupContext;
    const commit = { proposals: joiners.map((kp) => ({ proposalOrRefType: "proposal" as const, proposal: { proposalType: "add" as const, add: { keyPackage: kp } } })) };
    const sender = { senderType: "member" as const, leafIndex: 0 };
    const { framedContent, signature } = await createContentCommitSignature(gc, "mls_public_message", commit as never, sender, new Uint8Array(), this.me.signKey, this.cs.signature);
    const message = {
      version: "mls10",
      wireformat: "mls_public_message",
      publicMessage: { content: framedContent, auth: { contentType: "commit", signature, confirmationTag: randomBytes(32) }, senderType: "member", membershipTag: randomBytes(32) },
    } as unknown as MLSMessage;
    const commitBytes = encodeMlsMessage(message);
    const staged = await processMessage(state, commitBytes);
    if (staged.kind !== "commit") throw new Error("not a commit");
    // GroupInfoTBS of the new epoch as the DS assembles it (src/mls/group.ts assembleGroupInfo):
    // GroupContext || group_info_extensions<V> (none) || confirmation_tag<V> || signer.
    const signer = new Uint8Array(4);
    new DataView(signer.buffer).setUint32(0, staged.committer);
    const tbs = Buffer.concat([staged.groupContextBytes, Uint8Array.of(0), varint(staged.confirmationTag.length), staged.confirmationTag, signer]);
    const partialSignature = await signWithLabel(this.me.signKey, "GroupInfoTBS", tbs, this.cs.signature);
    const secrets = await Promise.all(
      joiners.map(async (kp) => ({ newMember: await makeKeyPackageRef(kp, this.cs.hash), encryptedGroupSecrets: { kemOutput: randomBytes(32), ciphertext: randomBytes(80) } })),
    );
    const welcome = { version: "mls10", wireformat: "mls_welcome", welcome: { cipherSuite: SUITE, secrets, encryptedGroupInfo: randomBytes(200) } } as unknown as MLSMessage;
    return { commit: message, commitBytes, welcome, staged, partial: { groupInfoExtensions: [], signature: partialSignature } };
  }

  /** The commit went through: the state moves to the new epoch. */
  async accept(staged: StagedCommit): Promise<void> {
    this.state = await merge(this.requireState(), staged);
  }

  /** An add_clients DSRequest for the joiners; the staged commit to accept once the DS answered ok. */
  async addRequest(joiners: readonly KeyPackage[]): Promise<{ bytes: Uint8Array; staged: StagedCommit; commitBytes: Uint8Array }> {
    const c = await this.addCommit(joiners);
    const body: DSRequestBody = {
      requestType: "add_clients",
      addClientsRequest: { groupUpdate: { commit: c.commit, partialGroupInfo: c.partial }, welcomeMessages: [c.welcome] },
    } as DSRequestBody;
    return { bytes: encodeDSRequest(await buildDSRequest(body, this.auth)), staged: c.staged, commitBytes: c.commitBytes };
  }

  /** A send_message DSRequest with a 1 KB PrivateMessage of the current epoch (random ciphertext: the DS cannot read it). */
  async sendRequest(bytes = 1024): Promise<Uint8Array> {
    const state = this.requireState();
    const pm = {
      groupId: this.groupId,
      epoch: state.groupContext.epoch,
      contentType: "application" as const,
      authenticatedData: new Uint8Array(),
      encryptedSenderData: randomBytes(40),
      ciphertext: randomBytes(Math.max(16, bytes - 60 - this.groupId.length)),
    };
    const message = { version: "mls10", wireformat: "mls_private_message", privateMessage: pm } as unknown as MLSMessage;
    const body = { requestType: "send_message", sendMessageRequest: { applicationMessage: message } } as DSRequestBody;
    return encodeDSRequest(await buildDSRequest(body, this.auth));
  }

  get treeBytes(): Uint8Array {
    return ratchetTreeBytes(this.requireState());
  }

  private requireState(): GroupState {
    if (this.state === undefined) throw new Error("no group yet");
    return this.state;
  }
}

function decodeGroupInfoStruct(bytes: Uint8Array) {
  // Through the MLSMessage decoder of ts-mls (wire format 4 = group_info), so the struct is what the SDK would send.
  const msg = new Uint8Array(4 + bytes.length);
  msg.set([0, 1, 0, 4]);
  msg.set(bytes, 4);
  return decodeGI(msg);
}

function decodeGI(msg: Uint8Array) {
  const m = decodeMlsMessage(msg, 0)![0];
  if (m.wireformat !== "mls_group_info") throw new Error("not a GroupInfo");
  return m.groupInfo;
}

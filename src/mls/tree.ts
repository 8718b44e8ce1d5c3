// The public ratchet tree with a per-node tree-hash cache and lookup indexes
// (encryption keys, signature keys, client identifiers -> position), all
// persistent: an edit copies only what it touches, so a staged commit costs
// O(changed nodes * log N) and the state it came from stays valid.
import type { Credential, LeafNode, ParentNode } from "ts-mls";
import { encodeLeafNode } from "ts-mls/leafNode.js";
import { determineLength } from "ts-mls/codec/variableLength.js";
import { PMap, PVec, type PMapEditor, type PVecEditor } from "./pvec.js";
import { EngineError, fail } from "./errors.js";
import { concat, keyOf, varLen, varLenHeader, bytesEqual, decodeLeafNodeFast, decodeParentNodeFast, encodedLeafNode } from "./codec.js";
import {
  covers,
  directPath,
  isLeafNode,
  leafRange,
  leafToNode,
  left,
  nodeToLeaf,
  nodeWidth,
  parentOf,
  right,
  rootOf,
  siblingOf,
  pow2AtLeast,
} from "./treemath.js";
import type { EngineCrypto } from "./crypto.js";
import { clientIdOf } from "./identity.js";

export interface LeafEntry {
  readonly t: 1;
  readonly leaf: LeafNode;
  /** The encoded LeafNode (tree hash input and LeafNodeTBS are cut from it). */
  readonly raw: Uint8Array;
  readonly clientId: string;
}
export interface ParentEntry {
  readonly t: 2;
  readonly parent: ParentNode;
}
export type TNode = LeafEntry | ParentEntry;

/** Copy every byte field so a kept leaf does not pin the (possibly large) message it came in. */
function compactLeaf(l: LeafNode): LeafNode {
  const c = l.credential;
  const credential: Credential =
    c.credentialType === "basic"
      ? { credentialType: "basic", identity: c.identity.slice() }
      : c.credentialType === "x509"
        ? { credentialType: "x509", certificates: c.certificates.map((x) => x.slice()) }
        : ({ ...(c as object), data: ((c as unknown as { data?: Uint8Array }).data ?? new Uint8Array()).slice() } as unknown as Credential);
  const base = {
    hpkePublicKey: l.hpkePublicKey.slice(),
    signaturePublicKey: l.signaturePublicKey.slice(),
    credential,
    capabilities: l.capabilities,
    extensions: l.extensions.map((e) => ({ extensionType: e.extensionType, extensionData: e.extensionData.slice() })),
    signature: l.signature.slice(),
  };
  switch (l.leafNodeSource) {
    case "key_package":
      return { ...base, leafNodeSource: "key_package", lifetime: l.lifetime };
    case "update":
      return { ...base, leafNodeSource: "update" };
    case "commit":
      return { ...base, leafNodeSource: "commit", parentHash: l.parentHash.slice() };
  }
}

export function leafEntry(leaf: LeafNode, raw?: Uint8Array): LeafEntry {
  if (raw === undefined) {
    const received = encodedLeafNode(leaf);
    if (received !== undefined) {
      // one copy of the received encoding, decoded again: no re-encoding, nothing pins the message
      raw = received.slice();
      leaf = decodeLeafNodeFast(raw, 0)[0];
    } else {
      leaf = compactLeaf(leaf);
      raw = encodeLeafNode(leaf);
    }
  }
  return { t: 1, leaf, raw, clientId: clientIdOf(leaf.credential) };
}
export const parentEntry = (parent: ParentNode): ParentEntry => ({ t: 2, parent });

/** Counters over members' capabilities, to check "supported by every member" in O(1). */
export interface CapCounts {
  readonly credUse: ReadonlyMap<string, number>;
  readonly credSupport: ReadonlyMap<string, number>;
  readonly extSupport: ReadonlyMap<number, number>;
  readonly propSupport: ReadonlyMap<number, number>;
}

export interface TreeOptions {
  /** Reject a second leaf with the same client identifier (default true). */
  readonly uniqueClientIds: boolean;
}

const hdrLen = (n: number): number => (n < 64 ? 1 : n < 16384 ? 2 : 4);

/** Write the varint header of an n-byte vector at o; returns the new offset. */
function putHdr(out: Uint8Array, o: number, n: number): number {
  if (n < 64) {
    out[o] = n;
    return o + 1;
  }
  if (n < 16384) {
    out[o] = 0x40 | (n >> 8);
    out[o + 1] = n;
    return o + 2;
  }
  const h = varLenHeader(n);
  out.set(h, o);
  return o + h.length;
}

function putVec(out: Uint8Array, o: number, v: Uint8Array): number {
  o = putHdr(out, o, v.length);
  out.set(v, o);
  return o + v.length;
}

/** Encoded ParentNode with the given unmerged leaves, written in one buffer. */
function parentNodeSize(p: ParentNode, unmerged: readonly number[]): number {
  const ul = unmerged.length * 4;
  return hdrLen(p.hpkePublicKey.length) + p.hpkePublicKey.length + hdrLen(p.parentHash.length) + p.parentHash.length + hdrLen(ul) + ul;
}

function putParentNode(out: Uint8Array, o: number, p: ParentNode, unmerged: readonly number[]): number {
  o = putVec(out, o, p.hpkePublicKey);
  o = putVec(out, o, p.parentHash);
  o = putHdr(out, o, unmerged.length * 4);
  for (const l of unmerged) {
    out[o] = l >>> 24;
    out[o + 1] = l >>> 16;
    out[o + 2] = l >>> 8;
    out[o + 3] = l;
    o += 4;
  }
  return o;
}

// Hash inputs are built in one reused buffer: a fresh Uint8Array over 64
// bytes gets its own backing store, which costs more than the hash itself.
let scratch = new Uint8Array(4096);
function scratchOf(n: number): Uint8Array {
  if (scratch.length < n) scratch = new Uint8Array(Math.max(n, 2 * scratch.length));
  return scratch;
}

/** RFC 9420 7.8 ParentNodeHashInput: 2 || optional<ParentNode> || left_hash<V> || right_hash<V> (a view of the scratch buffer). */
function parentHashInput(p: ParentNode | undefined, unmerged: readonly number[], lh: string, rh: string): Uint8Array {
  const body = p === undefined ? 1 : 1 + parentNodeSize(p, unmerged);
  const n = 1 + body + hdrLen(lh.length) + lh.length + hdrLen(rh.length) + rh.length;
  const out = scratchOf(n);
  out[0] = 2;
  out[1] = p === undefined ? 0 : 1;
  let o = p === undefined ? 2 : putParentNode(out, 2, p, unmerged);
  o = putKey(out, o, lh);
  putKey(out, o, rh);
  return out.subarray(0, n);
}

/** RFC 9420 7.8 LeafNodeHashInput: 1 || leaf_index || optional<LeafNode> (a view of the scratch buffer). */
function leafHashInput(li: number, raw: Uint8Array | undefined): Uint8Array {
  const n = 6 + (raw?.length ?? 0);
  const out = scratchOf(n);
  out[0] = 1;
  out[1] = li >>> 24;
  out[2] = li >>> 16;
  out[3] = li >>> 8;
  out[4] = li;
  out[5] = raw === undefined ? 0 : 1;
  if (raw !== undefined) out.set(raw, 6);
  return out.subarray(0, n);
}

/** Write a latin1-string hash as an opaque<V>. */
function putKey(out: Uint8Array, o: number, k: string): number {
  o = putHdr(out, o, k.length);
  for (let i = 0; i < k.length; i++) out[o + i] = k.charCodeAt(i);
  return o + k.length;
}

function bytesOfKey(k: string): Uint8Array {
  const out = new Uint8Array(k.length);
  for (let i = 0; i < k.length; i++) out[i] = k.charCodeAt(i);
  return out;
}

function bump<K>(m: Map<K, number>, k: K, d: number): void {
  const v = (m.get(k) ?? 0) + d;
  if (v === 0) m.delete(k);
  else m.set(k, v);
}

/** Immutable public ratchet tree. Node positions follow RFC 9420's array layout. */
export class PublicTree {
  constructor(
    readonly crypto: EngineCrypto,
    readonly opts: TreeOptions,
    readonly leafWidth: number,
    readonly nodes: PVec<TNode>,
    /** Tree hash of every node as a latin1 string (compact, no Buffer per hash); complete in a frozen tree. */
    readonly hashes: PVec<string>,
    readonly encKeys: PMap<number>,
    readonly sigKeys: PMap<number>,
    readonly clientIds: PMap<number>,
    readonly memberCount: number,
    readonly caps: CapCounts,
    /** All leaves below this index are non-blank. */
    readonly firstBlankHint: number,
    /** Resolution size of every node, filled lazily (UpdatePath ciphertext counts). */
    readonly resSizes: PVec<number> = PVec.empty(),
  ) {}

  static empty(crypto: EngineCrypto, opts: TreeOptions): PublicTree {
    const empty = { credUse: new Map(), credSupport: new Map(), extSupport: new Map(), propSupport: new Map() };
    return new PublicTree(crypto, opts, 0, PVec.empty(), PVec.empty(), PMap.empty(), PMap.empty(), PMap.empty(), 0, empty, 0);
  }

  get root(): number {
    return rootOf(this.leafWidth);
  }
  get rootHash(): Uint8Array {
    return bytesOfKey(this.hashes.get(this.root)!);
  }
  node(i: number): TNode | undefined {
    return this.nodes.get(i);
  }
  leaf(li: number): LeafEntry | undefined {
    const n = this.nodes.get(leafToNode(li));
    return n?.t === 1 ? n : undefined;
  }
  edit(): TreeEditor {
    return new TreeEditor(this);
  }

  /** Leaf index of a client identifier, if it is a member. */
  findClient(clientId: string): number | undefined {
    return this.clientIds.get(clientId);
  }
  findSignatureKey(key: Uint8Array): number | undefined {
    return this.sigKeys.get(keyOf(key));
  }

  /** RFC 9420 `optional<Node> ratchet_tree<V>`, trailing blanks stripped; written into one buffer. */
  encode(): Uint8Array {
    let last = this.nodes.length - 1;
    while (last >= 0 && this.nodes.get(last) === undefined) last--;
    let total = 0;
    for (let i = 0; i <= last; i++) {
      const n = this.nodes.get(i);
      total += n === undefined ? 1 : n.t === 1 ? 2 + n.raw.length : 2 + parentNodeSize(n.parent, n.parent.unmergedLeaves);
    }
    const hdr = varLenHeader(total);
    const out = new Uint8Array(hdr.length + total);
    out.set(hdr, 0);
    let o = hdr.length;
    for (let i = 0; i <= last; i++) {
      const n = this.nodes.get(i);
      if (n === undefined) {
        out[o++] = 0;
        continue;
      }
      out[o] = 1;
      out[o + 1] = n.t;
      o += 2;
      if (n.t === 1) {
        out.set(n.raw, o);
        o += n.raw.length;
      } else o = putParentNode(out, o, n.parent, n.parent.unmergedLeaves);
    }
    return out;
  }

  /**
   * Decode a ratchet tree (extension form) into an unvalidated PublicTree with
   * hashes. `onLeaf` sees each leaf as soon as it is parsed (seeding starts
   * its signature check there, so verification overlaps the rest).
   */
  static decode(bytes: Uint8Array, crypto: EngineCrypto, opts: TreeOptions, onLeaf?: (leafIndex: number, e: LeafEntry) => void): PublicTree {
    let hdr: { length: number; lengthFieldSize: number };
    try {
      hdr = determineLength(bytes, 0);
    } catch (e) {
      return fail("decode_error", (e as Error).message);
    }
    const end = hdr.lengthFieldSize + hdr.length;
    if (end !== bytes.length) fail("decode_error", "ratchet tree length mismatch");
    const nodes: (TNode | undefined)[] = [];
    let o = hdr.lengthFieldSize;
    while (o < end) {
      const present = bytes[o]!;
      o += 1;
      if (present === 0) {
        nodes.push(undefined);
        continue;
      }
      if (present !== 1) fail("decode_error", "bad optional flag in ratchet tree");
      if (o >= bytes.length) fail("decode_error", "node type");
      const nt = bytes[o]!;
      o += 1;
      const pos = nodes.length;
      if (nt === 1) {
        if (!isLeafNode(pos)) fail("invalid_tree", `leaf node at parent position ${pos}`);
        const [leaf, l] = decodeLeafNodeFast(bytes, o);
        const e: LeafEntry = { t: 1, leaf, raw: bytes.subarray(o, o + l), clientId: clientIdOf(leaf.credential) };
        nodes.push(e);
        onLeaf?.(pos >>> 1, e);
        o += l;
      } else if (nt === 2) {
        if (isLeafNode(pos)) fail("invalid_tree", `parent node at leaf position ${pos}`);
        const [parent, l] = decodeParentNodeFast(bytes, o);
        nodes.push({ t: 2, parent });
        o += l;
      } else fail("decode_error", `node type ${nt}`);
    }
    if (o !== end) fail("decode_error", "ratchet tree overrun");
    if (nodes.length === 0 || nodes[nodes.length - 1] === undefined) fail("invalid_tree", "ratchet tree empty or ends in a blank node");
    const leaves = pow2AtLeast((nodes.length + 1) / 2);
    const width = nodeWidth(leaves);
    while (nodes.length < width) nodes.push(undefined);
    return PublicTree.fromNodes(nodes, leaves, crypto, opts);
  }

  /** Build indexes and hashes over a node array (no validation beyond key uniqueness). */
  static fromNodes(nodes: (TNode | undefined)[], leaves: number, crypto: EngineCrypto, opts: TreeOptions): PublicTree {
    const ed = PublicTree.empty(crypto, opts).edit();
    ed.load(nodes, leaves);
    return ed.freeze();
  }

  // ---------- resolution and hashes (read-only) ----------

  resolution(x: number, out: number[] = [], limit = Infinity): number[] {
    resolutionOf((i) => this.nodes.get(i), x, out, limit);
    return out;
  }
}

/** RFC 9420 4.1.1 resolution, stopping once more than `limit` nodes are found. */
export function resolutionOf(get: (i: number) => TNode | undefined, x: number, out: number[], limit: number): void {
  if (out.length > limit) return;
  const n = get(x);
  if (n !== undefined) {
    out.push(x);
    if (n.t === 2) for (const l of n.parent.unmergedLeaves) out.push(leafToNode(l));
    return;
  }
  if (isLeafNode(x)) return;
  resolutionOf(get, left(x), out, limit);
  resolutionOf(get, right(x), out, limit);
}

/** Resolution size of every node of a whole tree, bottom-up (one pass; commits then keep them current). */
function resolutionSizes(nodes: readonly (TNode | undefined)[], leaves: number): number[] {
  const out = new Array<number>(nodes.length).fill(0);
  for (let x = 0; x < nodes.length; x += 2) out[x] = nodes[x] === undefined ? 0 : 1;
  for (let k = 1; 1 << k <= leaves; k++) {
    for (let x = (1 << k) - 1; x < nodes.length; x += 1 << (k + 1)) {
      const n = nodes[x];
      out[x] = n === undefined ? out[left(x)]! + out[right(x)]! : n.t === 2 ? 1 + n.parent.unmergedLeaves.length : 1;
    }
  }
  return out;
}

function hasNonBlank(get: (i: number) => TNode | undefined, x: number): boolean {
  if (get(x) !== undefined) return true;
  if (isLeafNode(x)) return false;
  return hasNonBlank(get, left(x)) || hasNonBlank(get, right(x));
}

/** Mutable working copy of a PublicTree (copy-on-write underneath). */
export class TreeEditor {
  readonly crypto: EngineCrypto;
  readonly opts: TreeOptions;
  leafWidth: number;
  private nodes: PVecEditor<TNode>;
  private hashes: PVecEditor<string>;
  private resSizes: PVecEditor<number>;
  private encKeys: PMapEditor<number>;
  private sigKeys: PMapEditor<number>;
  private clientIds: PMapEditor<number>;
  memberCount: number;
  readonly caps: {
    credUse: Map<string, number>;
    credSupport: Map<string, number>;
    extSupport: Map<number, number>;
    propSupport: Map<number, number>;
  };
  private firstBlankHint: number;
  /** Parent entries created by this editor: safe to extend in place (nobody else sees them yet). */
  private fresh = new WeakSet<ParentEntry>();

  constructor(base: PublicTree) {
    this.crypto = base.crypto;
    this.opts = base.opts;
    this.leafWidth = base.leafWidth;
    this.nodes = base.nodes.edit();
    this.hashes = base.hashes.edit();
    this.resSizes = base.resSizes.edit();
    this.encKeys = base.encKeys.edit();
    this.sigKeys = base.sigKeys.edit();
    this.clientIds = base.clientIds.edit();
    this.memberCount = base.memberCount;
    this.caps = {
      credUse: new Map(base.caps.credUse),
      credSupport: new Map(base.caps.credSupport),
      extSupport: new Map(base.caps.extSupport),
      propSupport: new Map(base.caps.propSupport),
    };
    this.firstBlankHint = base.firstBlankHint;
  }

  get root(): number {
    return rootOf(this.leafWidth);
  }
  readonly get = (i: number): TNode | undefined => this.nodes.get(i);
  leaf(li: number): LeafEntry | undefined {
    const n = this.nodes.get(leafToNode(li));
    return n?.t === 1 ? n : undefined;
  }
  findEncKey(k: Uint8Array): number | undefined {
    return this.encKeys.get(keyOf(k));
  }
  findSigKey(k: Uint8Array): number | undefined {
    return this.sigKeys.get(keyOf(k));
  }
  findClient(id: string): number | undefined {
    return this.clientIds.get(id);
  }

  private markDirty(i: number): void {
    const r = this.root;
    // Resolution sizes: every ancestor (a cached size need not have cached children).
    for (let x = i; ; x = parentOf(x)) {
      if (this.resSizes.get(x) !== undefined) this.resSizes.set(x, undefined);
      if (x === r || x >= this.resSizes.length) break;
    }
    // Invariant: a node without a cached hash has no cached hash above it either.
    for (;;) {
      const was = this.hashes.get(i);
      this.hashes.set(i, undefined);
      if (i === r || was === undefined) return;
      i = parentOf(i);
    }
  }

  private unindex(i: number, n: TNode): void {
    if (n.t === 1) {
      this.encKeys.delete(keyOf(n.leaf.hpkePublicKey));
      this.sigKeys.delete(keyOf(n.leaf.signaturePublicKey));
      if (this.clientIds.get(n.clientId) === nodeToLeaf(i)) this.clientIds.delete(n.clientId);
      this.memberCount--;
      this.countCaps(n.leaf, -1);
      const li = nodeToLeaf(i);
      if (li < this.firstBlankHint) this.firstBlankHint = li;
    } else {
      const k = keyOf(n.parent.hpkePublicKey);
      if (this.encKeys.get(k) === i) this.encKeys.delete(k);
    }
  }

  private index(i: number, n: TNode): void {
    if (n.t === 1) {
      const li = nodeToLeaf(i);
      const ek = keyOf(n.leaf.hpkePublicKey);
      if (this.encKeys.has(ek)) fail("duplicate_key", `encryption key of leaf ${li} already in the tree`);
      const sk = keyOf(n.leaf.signaturePublicKey);
      if (this.sigKeys.has(sk)) fail("duplicate_key", `signature key of leaf ${li} already in the tree`);
      if (this.opts.uniqueClientIds && this.clientIds.has(n.clientId))
        fail("duplicate_client", `client ${JSON.stringify(n.clientId)} is already leaf ${this.clientIds.get(n.clientId)}`);
      this.encKeys.set(ek, i);
      this.sigKeys.set(sk, li);
      if (!this.clientIds.has(n.clientId)) this.clientIds.set(n.clientId, li);
      this.memberCount++;
      this.countCaps(n.leaf, +1);
    } else {
      const k = keyOf(n.parent.hpkePublicKey);
      const at = this.encKeys.get(k);
      if (at !== undefined && at !== i) fail("duplicate_key", `encryption key of node ${i} already at node ${at}`);
      this.encKeys.set(k, i);
    }
  }

  private countCaps(leaf: LeafNode, d: number): void {
    bump(this.caps.credUse, String(leaf.credential.credentialType), d);
    const { credentials, extensions, proposals } = leaf.capabilities;
    // each value once per leaf (indexOf over a few entries: no Set per leaf)
    for (let i = 0; i < credentials.length; i++) if (credentials.indexOf(credentials[i]!) === i) bump(this.caps.credSupport, String(credentials[i]), d);
    for (let i = 0; i < extensions.length; i++) if (extensions.indexOf(extensions[i]!) === i) bump(this.caps.extSupport, extensions[i]!, d);
    for (let i = 0; i < proposals.length; i++) if (proposals.indexOf(proposals[i]!) === i) bump(this.caps.propSupport, proposals[i]!, d);
  }

  /** Replace node i (undefined = blank), keeping indexes and the hash cache in step. */
  setNode(i: number, n: TNode | undefined): void {
    const old = this.nodes.get(i);
    if (old === n) return;
    if (old !== undefined) this.unindex(i, old);
    this.nodes.set(i, n);
    if (n !== undefined) {
      try {
        this.index(i, n);
      } catch (e) {
        this.nodes.set(i, old);
        if (old !== undefined) this.index(i, old);
        throw e;
      }
    }
    this.markDirty(i);
  }

  /** Fill an empty editor with a whole tree (bulk setNode: the vectors are built in one go). */
  load(nodes: readonly (TNode | undefined)[], leaves: number): void {
    if (this.leafWidth !== 0) throw new Error("load: editor not empty");
    const w = nodeWidth(leaves);
    const all = nodes.length === w ? nodes : [...nodes, ...new Array<undefined>(Math.max(0, w - nodes.length))];
    this.leafWidth = leaves;
    this.nodes = PVec.from(all).edit();
    this.hashes = PVec.from(new Array<string | undefined>(w).fill(undefined)).edit();
    this.resSizes = PVec.from(resolutionSizes(all, leaves)).edit();
    for (let i = 0; i < w; i++) {
      const n = all[i];
      if (n !== undefined) this.indexNew(i, n);
    }
    this.nextFreeLeaf();
  }

  /**
   * index() for load(): the same checks in the same order, but each key is
   * looked up once (add-if-absent). A failure leaves the indexes half
   * updated, which is fine there: a failed load discards the editor.
   */
  private indexNew(i: number, n: TNode): void {
    if (n.t === 1) {
      const li = nodeToLeaf(i);
      if (!this.encKeys.add(keyOf(n.leaf.hpkePublicKey), i)) fail("duplicate_key", `encryption key of leaf ${li} already in the tree`);
      if (!this.sigKeys.add(keyOf(n.leaf.signaturePublicKey), li)) fail("duplicate_key", `signature key of leaf ${li} already in the tree`);
      if (!this.clientIds.add(n.clientId, li) && this.opts.uniqueClientIds)
        fail("duplicate_client", `client ${JSON.stringify(n.clientId)} is already leaf ${this.clientIds.get(n.clientId)}`);
      this.memberCount++;
      this.countCaps(n.leaf, +1);
    } else {
      const k = keyOf(n.parent.hpkePublicKey);
      const at = this.encKeys.get(k);
      if (at !== undefined) fail("duplicate_key", `encryption key of node ${i} already at node ${at}`);
      this.encKeys.add(k, i);
    }
  }

  resizeLeaves(leaves: number): void {
    const oldRoot = this.leafWidth === 0 ? -1 : this.root;
    this.leafWidth = leaves;
    const w = nodeWidth(leaves);
    this.nodes.resize(w);
    this.hashes.resize(w);
    this.resSizes.resize(w);
    if (oldRoot >= 0 && oldRoot < w) this.markDirty(oldRoot);
  }

  /** RFC 9420 12.1.3: drop right halves without members. */
  truncate(): void {
    let last = this.leafWidth - 1;
    while (last >= 0 && this.nodes.get(leafToNode(last)) === undefined) last--;
    if (last < 0) return;
    let w = this.leafWidth;
    while (w > 1 && last < w / 2) w /= 2;
    if (w !== this.leafWidth) {
      this.leafWidth = w;
      this.nodes.resize(nodeWidth(w));
      this.hashes.resize(nodeWidth(w));
      this.resSizes.resize(nodeWidth(w));
      // the new root's subtree hash is unchanged: subtree hashes do not depend on the width
    }
  }

  /** Blank every node on the direct path of leaf li. */
  blankDirectPath(li: number): void {
    for (const x of directPath(leafToNode(li), this.leafWidth)) if (this.nodes.get(x) !== undefined) this.setNode(x, undefined);
  }

  /** RFC 9420 12.1.1: leftmost blank leaf (or extend), add to unmerged_leaves of non-blank ancestors. */
  addLeaf(entry: LeafEntry): number {
    let li = this.firstBlankHint;
    while (li < this.leafWidth && this.nodes.get(leafToNode(li)) !== undefined) li++;
    this.firstBlankHint = li;
    if (li >= this.leafWidth) this.resizeLeaves(this.leafWidth === 0 ? 1 : this.leafWidth * 2);
    this.setNode(leafToNode(li), entry);
    this.firstBlankHint = li + 1;
    for (const x of directPath(leafToNode(li), this.leafWidth)) {
      const p = this.nodes.get(x);
      if (p?.t !== 2) continue;
      if (this.fresh.has(p)) {
        (p.parent.unmergedLeaves as number[]).push(li);
        this.markDirty(x);
      } else {
        const np = parentEntry({ ...p.parent, unmergedLeaves: [...p.parent.unmergedLeaves, li] });
        this.fresh.add(np);
        this.setNode(x, np);
      }
    }
    return li;
  }

  /** The leaf index addLeaf would use next (advances the hint past filled leaves). */
  nextFreeLeaf(): number {
    let li = this.firstBlankHint;
    while (li < this.leafWidth && this.nodes.get(leafToNode(li)) !== undefined) li++;
    this.firstBlankHint = li;
    return li;
  }

  removeLeaf(li: number): void {
    this.setNode(leafToNode(li), undefined);
    this.blankDirectPath(li);
  }

  updateLeaf(li: number, entry: LeafEntry): void {
    this.setNode(leafToNode(li), entry);
    this.blankDirectPath(li);
  }

  resolution(x: number, out: number[] = [], limit = Infinity): number[] {
    resolutionOf(this.get, x, out, limit);
    return out;
  }

  /** Filtered direct path of leaf li: [parent node, copath child] pairs, leaf to root. */
  filteredDirectPath(li: number): { node: number; copath: number }[] {
    const out: { node: number; copath: number }[] = [];
    let x = leafToNode(li);
    const r = this.root;
    while (x !== r) {
      const s = siblingOf(x);
      const p = parentOf(x);
      if (hasNonBlank(this.get, s)) out.push({ node: p, copath: s });
      x = p;
    }
    return out;
  }

  /** Size of the resolution of node x (RFC 9420 4.1.1), cached per node like the tree hashes. */
  resolutionSize(x: number): number {
    const c = this.resSizes.get(x);
    if (c !== undefined) return c;
    const n = this.nodes.get(x);
    let size: number;
    if (n !== undefined) size = n.t === 2 ? 1 + n.parent.unmergedLeaves.length : 1;
    else size = isLeafNode(x) ? 0 : this.resolutionSize(left(x)) + this.resolutionSize(right(x));
    this.resSizes.set(x, size);
    return size;
  }

  // ---------- hashes ----------

  hashOf(x: number): Uint8Array {
    return bytesOfKey(this.hashKeyOf(x));
  }

  /** Tree hash of node x (latin1 string), from the cache or computed and cached. */
  private hashKeyOf(x: number): string {
    const h = this.hashes.get(x);
    if (h !== undefined) return h;
    const n = this.nodes.get(x);
    let input: Uint8Array;
    if (isLeafNode(x)) {
      if (n !== undefined && n.t !== 1) throw new EngineError("invalid_tree", "parent at leaf position");
      input = leafHashInput(nodeToLeaf(x), n?.raw);
    } else {
      const lh = this.hashKeyOf(left(x));
      const rh = this.hashKeyOf(right(x));
      const p = (n as ParentEntry | undefined)?.parent;
      input = parentHashInput(p, p?.unmergedLeaves ?? [], lh, rh);
    }
    const out = this.crypto.hashKey(input);
    this.hashes.set(x, out);
    return out;
  }

  /** Tree hash of subtree x with the given leaves blanked and dropped from unmerged_leaves. */
  hashExcluding(x: number, excluded: readonly number[]): Uint8Array {
    return bytesOfKey(this.hashKeyExcluding(x, excluded));
  }

  private hashKeyExcluding(x: number, excluded: readonly number[]): string {
    if (excluded.length === 0) return this.hashKeyOf(x);
    const sorted = [...excluded].sort((a, b) => a - b);
    return this.hashExcludingSorted(x, sorted, new Set(sorted));
  }

  private hashExcludingSorted(x: number, sorted: readonly number[], set: ReadonlySet<number>): string {
    const [s, e] = leafRange(x);
    // any excluded leaf in [s, e)? (binary search for the first >= s)
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < s) lo = mid + 1;
      else hi = mid;
    }
    if (lo >= sorted.length || sorted[lo]! >= e) return this.hashKeyOf(x);
    if (isLeafNode(x)) return this.crypto.hashKey(leafHashInput(nodeToLeaf(x), undefined));
    const n = this.nodes.get(x);
    const lh = this.hashExcludingSorted(left(x), sorted, set);
    const rh = this.hashExcludingSorted(right(x), sorted, set);
    const p = (n as ParentEntry | undefined)?.parent;
    return this.crypto.hashKey(parentHashInput(p, p === undefined ? [] : p.unmergedLeaves.filter((l) => !set.has(l)), lh, rh));
  }

  /** RFC 9420 7.9: ParentHash of parent p as seen from the child whose sibling is s. */
  parentHash(p: number, s: number): Uint8Array {
    const pn = this.nodes.get(p);
    if (pn?.t !== 2) throw new EngineError("invalid_tree", `expected parent node at ${p}`);
    const sib = bytesOfKey(this.hashKeyExcluding(s, pn.parent.unmergedLeaves));
    return this.crypto.hash(concat(varLen(pn.parent.hpkePublicKey), varLen(pn.parent.parentHash), varLen(sib)));
  }

  freeze(): PublicTree {
    if (this.leafWidth > 0) this.hashKeyOf(this.root);
    this.fresh = new WeakSet(); // frozen entries are shared from now on
    return new PublicTree(
      this.crypto,
      this.opts,
      this.leafWidth,
      this.nodes.freeze(),
      this.hashes.freeze(),
      this.encKeys.freeze(),
      this.sigKeys.freeze(),
      this.clientIds.freeze(),
      this.memberCount,
      { credUse: new Map(this.caps.credUse), credSupport: new Map(this.caps.credSupport), extSupport: new Map(this.caps.extSupport), propSupport: new Map(this.caps.propSupport) },
      this.firstBlankHint,
      this.resSizes.freeze(),
    );
  }

  /**
   * RFC 9420 7.9.2: every non-blank parent node must be parent-hash valid with
   * respect to one of its children. Used when seeding from a received tree.
   */
  verifyAllParentHashes(): void {
    const width = nodeWidth(this.leafWidth);
    for (let p = 1; p < width; p += 2) {
      const pn = this.nodes.get(p);
      if (pn === undefined) continue;
      if (pn.t !== 2) fail("invalid_tree", `leaf at parent position ${p}`);
      if (!this.parentHashValidVia(p, left(p), right(p)) && !this.parentHashValidVia(p, right(p), left(p)))
        fail("invalid_parent_hash", `parent node ${p} is not parent-hash valid`);
    }
  }

  private parentHashValidVia(p: number, c: number, s: number): boolean {
    const pn = this.nodes.get(p) as ParentEntry;
    const [cs, ce] = leafRange(c);
    const unmergedInC = new Set(pn.parent.unmergedLeaves.filter((l) => l >= cs && l < ce).map(leafToNode));
    const res = this.resolution(c, [], unmergedInC.size + 1);
    if (res.length !== unmergedInC.size + 1) return false;
    const others = res.filter((d) => !unmergedInC.has(d));
    if (others.length !== 1) return false;
    const d = this.nodes.get(others[0]!);
    const dHash = d === undefined ? undefined : d.t === 2 ? d.parent.parentHash : d.leaf.leafNodeSource === "commit" ? d.leaf.parentHash : undefined;
    if (dHash === undefined) return false;
    return bytesEqual(dHash, this.parentHash(p, s));
  }

  /** Structural checks of unmerged_leaves (RFC 9420 7.9 / 12.4.3.1). */
  verifyUnmergedLeaves(): void {
    const width = nodeWidth(this.leafWidth);
    const sets = new Map<number, Set<number>>();
    const setOf = (x: number, pn: ParentEntry): Set<number> => {
      let st = sets.get(x);
      if (st === undefined) {
        st = new Set(pn.parent.unmergedLeaves);
        sets.set(x, st);
      }
      return st;
    };
    for (let p = 1; p < width; p += 2) {
      const pn = this.nodes.get(p);
      if (pn?.t !== 2) continue;
      if (setOf(p, pn).size !== pn.parent.unmergedLeaves.length) fail("invalid_tree", `node ${p} lists an unmerged leaf twice`);
      for (const l of pn.parent.unmergedLeaves) {
        const ln = leafToNode(l);
        if (!covers(p, ln) || ln === p) fail("invalid_tree", `unmerged leaf ${l} not below node ${p}`);
        if (this.nodes.get(ln)?.t !== 1) fail("invalid_tree", `unmerged leaf ${l} of node ${p} is blank`);
        let x = parentOf(ln);
        while (x !== p) {
          const xn = this.nodes.get(x);
          if (xn?.t === 2 && !setOf(x, xn).has(l)) fail("invalid_tree", `node ${x} between leaf ${l} and node ${p} does not list it as unmerged`);
          x = parentOf(x);
        }
      }
    }
  }
}

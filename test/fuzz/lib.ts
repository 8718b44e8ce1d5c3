// Mutation fuzzing of the wire decoders and the engine's processMessage
// (docs/security.md, "Fuzzing"). Valid inputs (real ts-mls objects and
// fast-check samples of every DS struct) are mutated by a seeded PRNG; each
// target states its invariant:
// - a decoder either throws WireDecodeError or returns a value that encodes
//   back to exactly the input (canonical bytes);
// - processMessage either stages the message or rejects with a typed error
//   (EngineError, WireDecodeError), and the group state it was given is
//   byte for byte unchanged afterwards.
// Anything else (TypeError, RangeError, a ts-mls CodecError, a hang) is a
// finding. Used by fuzz.test.ts (fixed seed and budget, in CI) and run.ts
// (`make fuzz`, long runs). No vitest import here: run.ts runs under tsx.
import fc from "fast-check";
import {
  createCommit,
  createGroup,
  createGroupInfoWithExternalPub,
  createProposal,
  defaultCapabilities,
  defaultLifetime,
  encodeMlsMessage,
  generateKeyPackage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroupExternal,
  type CiphersuiteImpl,
  type MLSMessage,
} from "ts-mls";
import { signWithLabel } from "ts-mls/crypto/signature.js";
import { groupInfoEncoder, decodeGroupInfo } from "ts-mls/groupInfo.js";
import { decodeRatchetTree, encodeRatchetTree } from "ts-mls/ratchetTree.js";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { varLenTypeEncoder } from "ts-mls/codec/variableLength.js";
import { extensionEncoder } from "ts-mls/extension.js";
import { EngineError } from "../../src/mls/errors.js";
import { merge, processMessage, seedFromGroupInfo, type GroupState } from "../../src/mls/group.js";
import { encodeGroupState, groupInfoBytes, ratchetTreeBytes } from "../../src/mls/state.js";
import { nodeCryptoProvider } from "../../src/mls/crypto.js";
import * as W from "../../src/wire/index.js";
import { arbs } from "../wire/arbitraries.js";
import { mlsFixtures } from "../wire/fixtures.js";

// ---------------------------------------------------------------- PRNG and mutators

/** mulberry32: seeded, fast, reproducible. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  int(n: number): number {
    return n <= 1 ? 0 : this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

const INTERESTING = [0x00, 0x01, 0x02, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xfe, 0xff];

/** One to four random edits: bit flips, interesting bytes, non-minimal length headers, inserts, deletes, copies, splices, truncation. */
export function mutate(rng: Rng, input: Uint8Array, corpus: readonly Uint8Array[], maxEdits = 4): Uint8Array {
  let b: Uint8Array = new Uint8Array(input);
  const edits = 1 + rng.int(maxEdits);
  for (let e = 0; e < edits; e++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(10)) {
      case 0:
        if (b.length > 0) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 1:
        if (b.length > 0) b[rng.int(b.length)] = rng.pick(INTERESTING);
        break;
      case 2: {
        // A one-byte <V> length as a two-byte header of the same value (non-minimal), or a huge one.
        if (b.length === 0) break;
        const i = rng.int(b.length);
        const v = b[i]! & 0x3f;
        const header = rng.int(2) === 0 ? [0x40, v] : [0x80 | rng.int(0x40), rng.int(256), rng.int(256), rng.int(256)];
        b = concat(b.subarray(0, i), Uint8Array.from(header), b.subarray(i + 1));
        break;
      }
      case 3: {
        const n = 1 + rng.int(8);
        const ins = Uint8Array.from({ length: n }, () => rng.int(256));
        b = concat(b.subarray(0, at), ins, b.subarray(at));
        break;
      }
      case 4: {
        const n = 1 + rng.int(Math.min(16, Math.max(1, b.length - at)));
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + n)));
        break;
      }
      case 5: {
        // Copy a chunk of the input elsewhere (repeated fields, nested structs).
        if (b.length < 2) break;
        const from = rng.int(b.length);
        const n = 1 + rng.int(Math.min(32, b.length - from));
        b = concat(b.subarray(0, at), b.slice(from, from + n), b.subarray(at));
        break;
      }
      case 6: {
        // Splice with another corpus entry.
        const other = rng.pick(corpus);
        const cut = rng.int(other.length + 1);
        b = concat(b.subarray(0, at), other.subarray(cut));
        break;
      }
      case 7:
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 8: {
        // A 16- or 32-bit field set to a boundary value.
        const w = rng.int(2) === 0 ? 2 : 4;
        if (b.length < w) break;
        const i = rng.int(b.length - w + 1);
        const v = rng.pick([0, 1, 0xff, 0xffff, 0x7fffffff, 0xffffffff, 0xf0a1, 0x000a]);
        for (let k = 0; k < w; k++) b[i + k] = (v >>> (8 * (w - 1 - k))) & 0xff;
        break;
      }
      default: {
        // Overwrite a run with random bytes.
        const n = 1 + rng.int(8);
        for (let k = 0; k < n && at + k < b.length; k++) b[at + k] = rng.int(256);
      }
    }
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

// ---------------------------------------------------------------- targets

export class FuzzFinding extends Error {
  override readonly name = "FuzzFinding";
  constructor(
    readonly target: string,
    readonly input: Uint8Array,
    message: string,
    readonly original?: unknown,
  ) {
    super(`${target}: ${message} (input ${hex(input).slice(0, 400)}${input.length > 200 ? "..." : ""})`);
  }
}

export interface Target {
  readonly name: string;
  readonly corpus: readonly Uint8Array[];
  /** Throws FuzzFinding when the invariant breaks; else what happened ("ok", an error kind or code). */
  run(input: Uint8Array): Promise<string> | string;
  /** Optional: a deeper mutation than bytes (e.g. re-signed content). */
  mutate?(rng: Rng, input: Uint8Array): Promise<Uint8Array | undefined>;
}

/** A decoder target: WireDecodeError, or a canonical value. */
function decoder<T>(name: string, corpus: readonly Uint8Array[], decode: (b: Uint8Array) => T, encode: (v: T) => Uint8Array): Target {
  return {
    name,
    corpus,
    run(input) {
      let value: T;
      try {
        value = decode(input);
      } catch (err) {
        if (err instanceof W.WireDecodeError) return err.kind;
        throw new FuzzFinding(name, input, `untyped decode error ${(err as Error)?.name}: ${(err as Error)?.message}`, err);
      }
      let again: Uint8Array;
      try {
        again = encode(value);
      } catch (err) {
        throw new FuzzFinding(name, input, `decoded value does not encode: ${(err as Error)?.message}`, err);
      }
      if (!equal(again, input)) throw new FuzzFinding(name, input, "decoded value encodes to other bytes (not canonical)");
      return "ok";
    },
  };
}

/** Every wire decoder, with a corpus of valid encodings. */
export async function wireTargets(seed = 1): Promise<Target[]> {
  const f = await mlsFixtures();
  const A = arbs(f);
  const sample = <T>(arb: fc.Arbitrary<T>, n: number, enc: (v: T) => Uint8Array): Uint8Array[] =>
    fc.sample(arb, { seed, numRuns: n }).map(enc);
  const mls = f.messages.map((m) => W.encodeMLSMessage(m));
  return [
    decoder("DSRequest", sample(A.request, 40, W.encodeDSRequest), (b) => W.decodeDSRequest(b), W.encodeDSRequest),
    decoder("DSResponse", sample(A.response, 30, W.encodeDSResponse), (b) => W.decodeDSResponse(b), W.encodeDSResponse),
    decoder("DSFanoutRequest", sample(A.fanoutRequest, 20, W.encodeDSFanoutRequest), (b) => W.decodeDSFanoutRequest(b), W.encodeDSFanoutRequest),
    decoder("DSFanoutResponse", sample(A.fanoutResponse, 20, W.encodeDSFanoutResponse), (b) => W.decodeDSFanoutResponse(b), W.encodeDSFanoutResponse),
    decoder("MLSMessage", mls, (b) => W.decodeMLSMessage(b), W.encodeMLSMessage),
    decoder("KeyPackage", f.keyPackages.map(W.encodeKeyPackageBytes), (b) => W.decodeKeyPackageBytes(b), W.encodeKeyPackageBytes),
    decoder("RatchetTree", [W.encodeRatchetTreeBytes(f.ratchetTree)], (b) => W.decodeRatchetTreeBytes(b), W.encodeRatchetTreeBytes),
    decoder("MLSGroupUpdate", sample(A.groupUpdate, 15, W.encodeMLSGroupUpdate), (b) => W.decodeMLSGroupUpdate(b), W.encodeMLSGroupUpdate),
    decoder("PartialGroupInfo", sample(A.partialGroupInfo, 15, W.encodePartialGroupInfo), (b) => W.decodePartialGroupInfo(b), W.encodePartialGroupInfo),
    decoder("DSError", sample(A.dsError, 15, W.encodeDSError), (b) => W.decodeDSError(b), W.encodeDSError),
    decoder("ClientAuthTBS", sample(A.clientAuthTBS, 15, W.encodeClientAuthTBS), (b) => W.decodeClientAuthTBS(b), W.encodeClientAuthTBS),
    decoder(
      "RegistrationCredential",
      sample(A.registrationCredential, 15, W.encodeRegistrationCredential),
      (b) => W.decodeRegistrationCredential(b),
      W.encodeRegistrationCredential,
    ),
    decoder(
      "external_senders",
      [W.encodeExternalSenders([{ signaturePublicKey: new Uint8Array(32).fill(7), credential: { credentialType: "basic", identity: new TextEncoder().encode("a.example") } }])],
      (b) => W.decodeExternalSenders(b),
      W.encodeExternalSenders,
    ),
  ];
}

// ---------------------------------------------------------------- the engine

const SUITE = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";
const te = new TextEncoder();

interface Signer {
  readonly leaf: number | "external";
  readonly key: Uint8Array;
}

/**
 * A two-member group (alice, bob) as the hub sees it, and valid messages
 * for its current epoch: an Add commit with path, an empty commit (update),
 * a Remove proposal, an Add proposal, a Remove commit, an external join.
 */
export async function engineTarget(): Promise<Target> {
  const cs: CiphersuiteImpl = await getCiphersuiteImpl(getCiphersuiteFromName(SUITE), nodeCryptoProvider);
  const kp = (name: string) => generateKeyPackage({ credentialType: "basic", identity: te.encode(name) }, defaultCapabilities(), defaultLifetime, [], cs);
  const alice = await kp("alice:1@a.example");
  const bob = await kp("bob:1@b.example");
  const carol = await kp("carol:1@c.example");
  const dave = await kp("dave:1@d.example");
  let a = await createGroup(te.encode("fuzz-group"), alice.publicPackage, alice.privatePackage, [], cs);
  const gi0 = await createGroupInfoWithExternalPub(a, [], cs);
  let state: GroupState = await seedFromGroupInfo(encode(groupInfoEncoder)(gi0), encodeRatchetTree(a.ratchetTree));
  const addBob = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: bob.publicPackage } }] });
  const pgi = async (s: typeof a) => {
    const gi = await createGroupInfoWithExternalPub(s, [], cs);
    const exts = encode(varLenTypeEncoder(extensionEncoder))(gi.extensions);
    return concat(exts, W.encodeWith(W.opaqueV, gi.signature));
  };
  state = await merge(state, await processMessage(state, encodeMlsMessage(addBob.commit)), await pgi(addBob.newState));
  a = addBob.newState;

  const msgs: { bytes: Uint8Array; signer: Signer }[] = [];
  const own = { leaf: 0, key: a.signaturePrivateKey } as const;
  const m = (x: MLSMessage) => encodeMlsMessage(x);
  msgs.push({ bytes: m((await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: carol.publicPackage } }] })).commit), signer: own });
  msgs.push({ bytes: m((await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true })).commit), signer: own });
  msgs.push({ bytes: m((await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "remove", remove: { removed: 1 } }] })).commit), signer: own });
  msgs.push({ bytes: m((await createProposal(a, true, { proposalType: "remove", remove: { removed: 1 } }, cs)).message), signer: own });
  msgs.push({ bytes: m((await createProposal(a, true, { proposalType: "add", add: { keyPackage: carol.publicPackage } }, cs)).message), signer: own });
  const gi = decodeGroupInfo(groupInfoBytes(state)!, 0)![0];
  const tree = decodeRatchetTree(ratchetTreeBytes(state), 0)![0];
  const ext = await joinGroupExternal(gi, dave.publicPackage, dave.privatePackage, false, cs, tree);
  msgs.push({
    bytes: m({ version: "mls10", wireformat: "mls_public_message", publicMessage: ext.publicMessage }),
    signer: { leaf: "external", key: dave.privatePackage.signaturePrivateKey },
  });
  // Each must be valid as given (else the corpus tests nothing).
  for (const x of msgs) await processMessage(state, x.bytes);

  const snapshot = encodeGroupState(state);
  const signers = new Map(msgs.map((x) => [hex(x.bytes), x.signer] as const));
  const corpus = msgs.map((x) => x.bytes);

  return {
    name: "processMessage",
    corpus,
    async run(input) {
      let outcome = "ok";
      try {
        await processMessage(state, input);
      } catch (err) {
        if (err instanceof EngineError) outcome = err.code;
        else if (err instanceof W.WireDecodeError) outcome = `wire:${err.kind}`;
        else throw new FuzzFinding("processMessage", input, `untyped error ${(err as Error)?.name}: ${(err as Error)?.message}`, err);
      }
      if (!equal(encodeGroupState(state), snapshot)) throw new FuzzFinding("processMessage", input, "the group state changed");
      return outcome;
    },
    /**
     * Mutate the FramedContent of a corpus message and sign it again with its
     * sender's key, so the signature check passes and the deeper checks run.
     */
    async mutate(rng, input) {
      const signer = signers.get(hex(input));
      if (signer === undefined) return undefined;
      let msg: MLSMessage;
      try {
        msg = W.decodeMLSMessage(input);
      } catch {
        return undefined;
      }
      if (msg.wireformat !== "mls_public_message") return undefined;
      const pm = msg.publicMessage;
      // version(2) wire_format(2) | FramedContent | FramedContentAuthData | membership_tag?
      const contentBytes = W.encodeMLSMessage({ ...msg, publicMessage: { ...pm, auth: { ...pm.auth, signature: new Uint8Array() } as typeof pm.auth } });
      // A few tries at one small edit that still parses: those reach the checks behind the signature.
      let again: MLSMessage | undefined;
      let last = contentBytes;
      for (let attempt = 0; attempt < 8 && again === undefined; attempt++) {
        last = concat(contentBytes.subarray(0, 4), mutate(rng, contentBytes.subarray(4), corpus, 1));
        try {
          again = W.decodeMLSMessage(last);
        } catch {
          again = undefined;
        }
      }
      if (again === undefined) return last;
      if (again.wireformat !== "mls_public_message") return W.encodeMLSMessage(again);
      const content = again.publicMessage.content;
      const tbs = W.encodeFramedContentTBS({
        protocolVersion: "mls10",
        wireformat: "mls_public_message",
        content,
        senderType: content.sender.senderType,
        context: a.groupContext,
      } as never);
      const signature = await signWithLabel(signer.key, "FramedContentTBS", tbs, cs.signature);
      try {
        return W.encodeMLSMessage({ ...again, publicMessage: { ...again.publicMessage, auth: { ...again.publicMessage.auth, signature } } });
      } catch {
        return undefined;
      }
    },
  };
}

// ---------------------------------------------------------------- the loop

export interface FuzzStats {
  inputs: number;
  byTarget: Record<string, number>;
  /** Per target, how often each outcome came (how deep the inputs got). */
  outcomes: Record<string, Record<string, number>>;
  findings: FuzzFinding[];
  ms: number;
}

/**
 * Runs `budget(target)` mutated inputs per target from `seed`; stops at the
 * first `maxFindings` findings. Deterministic for a given seed and budget.
 */
export async function fuzz(
  targets: readonly Target[],
  o: { seed: number; budget: (t: Target) => number; maxFindings?: number; onProgress?: (s: FuzzStats) => void; progressEvery?: number },
): Promise<FuzzStats> {
  const started = performance.now();
  const stats: FuzzStats = { inputs: 0, byTarget: {}, outcomes: {}, findings: [], ms: 0 };
  const maxFindings = o.maxFindings ?? 10;
  for (const [ti, t] of targets.entries()) {
    const rng = new Rng((o.seed ^ Math.imul(ti + 1, 0x9e3779b1)) >>> 0);
    const n = o.budget(t);
    stats.byTarget[t.name] = 0;
    const outcomes: Record<string, number> = (stats.outcomes[t.name] = {});
    for (let i = 0; i < n && stats.findings.length < maxFindings; i++) {
      const base = rng.pick(t.corpus);
      let input: Uint8Array | undefined;
      if (t.mutate !== undefined && rng.int(2) === 0) input = await t.mutate(rng, base);
      input ??= mutate(rng, base, t.corpus);
      try {
        const outcome = await t.run(input);
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      } catch (err) {
        stats.findings.push(err instanceof FuzzFinding ? err : new FuzzFinding(t.name, input, `runner threw ${(err as Error)?.message}`, err));
      }
      stats.inputs++;
      stats.byTarget[t.name]!++;
      if (o.onProgress !== undefined && stats.inputs % (o.progressEvery ?? 100_000) === 0) o.onProgress({ ...stats, ms: performance.now() - started });
    }
  }
  stats.ms = performance.now() - started;
  return stats;
}

// Makes test/interop/fixtures/corecrypto-10.3.0.json: MLS bytes produced by
// CoreCrypto 10.3.0 (Wire, on OpenMLS), an implementation independent of
// ts-mls, for the RFC bytes audit (test/interop/rfc-bytes.test.ts,
// docs/protocol.md). Run from the repository root:
//
//   npx tsx test/interop/make-fixtures.ts
//
// No DS is involved: a CoreCrypto client creates a group with a hub key as
// external sender, and every commit it hands to its transport is recorded as
// is. The only bytes made by us are a ts-mls member's KeyPackage (the one
// CoreCrypto adds) and the hub's Remove proposal (signed with the hub key,
// ts-mls), which CoreCrypto then commits by reference. The output is
// deterministic in structure, not in bytes (keys are fresh on every run).
import { writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { protectExternalProposalPublic } from "ts-mls/messageProtectionPublic.js";
import { MimiMember } from "../../src/client/index.js";
import { apply, groupInfoFromMlsMessage, seedFromGroupInfo } from "../../src/mls/index.js";
import { encodeKeyPackageBytes, encodeMLSMessage } from "../../src/wire/index.js";
import { CoreCryptoClient, groupUpdateOf, loadCoreCrypto, ratchetTreeOf, type CoreCryptoCommit } from "./corecrypto.js";
import { encodePartialGroupInfo } from "../../src/wire/index.js";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

async function main(): Promise<void> {
  const cc = await loadCoreCrypto();
  const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
  const hub = await cs.signature.keygen();
  const commits: CoreCryptoCommit[] = [];
  const a = await CoreCryptoClient.create({ domain: "cc.example" });
  const b = await CoreCryptoClient.create({ domain: "cc.example" });
  for (const c of [a, b]) c.submit = async (commit) => void commits.push(commit);
  const member = await MimiMember.create({ clientId: "6d696d69-0000-4000-8000-0000000000aa:1@ts.example" });
  member.token = { token: Uint8Array.of(1, 2, 3) };

  const groupId = new TextEncoder().encode("fixture-group@cc.example");
  const keyPackage = await b.keyPackage();
  await a.createConversation(groupId, hub.publicKey);
  await a.firstCommit(groupId); // [0] update (epoch 1): the GroupInfo that seeds a hub
  const tsKp = (await member.generateKeyPackage()).publicPackage;
  await a.add(groupId, [encodeKeyPackageBytes(tsKp)]); // [1] add of a ts-mls KeyPackage (with the MIMI extensions), Welcome
  await a.remove(groupId, [member.clientId]); // [2] remove
  const beforeJoin = commits.at(-1)!.groupInfo;
  await b.joinByExternalCommit(groupId, beforeJoin); // [3] external commit by b
  await a.decrypt(groupId, commits.at(-1)!.commit);

  // The hub (external sender 0) proposes to remove b; a commits the proposal by reference.
  let state = await seedFromGroupInfo(groupInfoFromMlsMessage(commits[0]!.groupInfo), ratchetTreeOf(commits[0]!.groupInfo));
  for (const c of commits.slice(1)) state = await apply(state, c.commit, encodePartialGroupInfo(groupUpdateOf(c).partialGroupInfo));
  const { publicMessage } = await protectExternalProposalPublic(hub.signKey, state.groupContext, new Uint8Array(), { proposalType: "remove", remove: { removed: 1 } }, { senderType: "external", senderIndex: 0 }, cs);
  const proposal = encodeMLSMessage({ version: "mls10", wireformat: "mls_public_message", publicMessage });
  await a.decrypt(groupId, proposal);
  await a.commitPending(groupId); // [4] commit of the hub's proposal by reference

  const out = {
    about: "MLS bytes produced by CoreCrypto 10.3.0 (npm @wireapp/core-crypto, WASM build, OpenMLS inside), made by test/interop/make-fixtures.ts; hex. Used by test/interop/rfc-bytes.test.ts.",
    corecrypto_version: cc.version(),
    made_at: new Date().toISOString(),
    cipher_suite: 1,
    group_id: hex(groupId),
    hub_signature_key: hex(hub.publicKey),
    key_package: { about: "CoreCrypto KeyPackage (bare KeyPackage struct, as generateKeyPackage().serialize() gives it)", bytes: hex(keyPackage) },
    ts_mls_key_package: { about: "the ts-mls (MimiMember) KeyPackage CoreCrypto adds in commits[1]", bytes: hex(encodeKeyPackageBytes(tsKp)) },
    hub_remove_proposal: { about: "PublicMessage Remove(leaf 1) by the hub as external sender 0 (ts-mls), committed by reference in commits[4]", bytes: hex(proposal) },
    commits: commits.map((c, i) => ({
      about: ["first commit of a CoreCrypto-created group (self update); its GroupInfo seeds a hub", "add of a ts-mls KeyPackage", "remove of the ts-mls member", "external commit (join) by a second CoreCrypto client", "commit of the hub's Remove proposal by reference"][i],
      intent: c.intent,
      commit: hex(c.commit),
      group_info: hex(c.groupInfo),
      ...(c.welcome !== undefined ? { welcome: hex(c.welcome) } : {}),
    })),
  };
  const dir = join(process.cwd(), "test", "interop", "fixtures");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "corecrypto-10.3.0.json"), JSON.stringify(out, null, 2) + "\n");
  console.log(`wrote ${commits.length} commits`);
}

await main();

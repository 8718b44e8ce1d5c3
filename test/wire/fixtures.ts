// Real MLS objects made once with ts-mls, for the DS structs' MLS-bearing fields.
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  createGroupInfoWithExternalPubAndRatchetTree,
  createProposal,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  generateKeyPackage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  type Credential,
  type KeyPackage,
  type MLSMessage,
  type RatchetTree,
} from "ts-mls";
import { makeFanoutAuthExtension, makeLastResortExtension, selfRemoveProposal } from "../../src/wire/index.js";

export interface MlsFixtures {
  readonly keyPackages: readonly KeyPackage[];
  /** MLSMessages of every wire format, and each PublicMessage content type. */
  readonly commit: MLSMessage;
  readonly proposal: MLSMessage;
  readonly selfRemove: MLSMessage;
  readonly application: MLSMessage;
  readonly welcome: MLSMessage;
  readonly groupInfo: MLSMessage;
  readonly keyPackageMessage: MLSMessage;
  readonly ratchetTree: RatchetTree;
  readonly messages: readonly MLSMessage[];
}

let cached: Promise<MlsFixtures> | undefined;

export function mlsFixtures(): Promise<MlsFixtures> {
  cached ??= build();
  return cached;
}

async function build(): Promise<MlsFixtures> {
  const impl = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
  const cred = (name: string): Credential => ({
    credentialType: "basic",
    identity: new TextEncoder().encode(name),
  });
  const alice = await generateKeyPackage(cred("alice:1@a.example"), defaultCapabilities(), defaultLifetime, [], impl);
  const bob = await generateKeyPackage(cred("bob:1@b.example"), defaultCapabilities(), defaultLifetime, [], impl);
  const carol = await generateKeyPackage(
    cred("mimi://c.example/u/carol/d/1"),
    defaultCapabilities(),
    defaultLifetime,
    [makeFanoutAuthExtension({ token: Uint8Array.of(1, 2, 3) }), makeLastResortExtension()],
    impl,
  );

  const groupId = new TextEncoder().encode("group-1");
  const aliceGroup = await createGroup(groupId, alice.publicPackage, alice.privatePackage, [], impl);
  const add = await createCommit(
    { state: aliceGroup, cipherSuite: impl },
    { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: bob.publicPackage } }] },
  );
  const welcome = add.welcome!;
  const bobGroup = await joinGroup(welcome, bob.publicPackage, bob.privatePackage, emptyPskIndex, impl, add.newState.ratchetTree);
  const gi = await createGroupInfoWithExternalPubAndRatchetTree(add.newState, [], impl);
  const app = await createApplicationMessage(bobGroup, new TextEncoder().encode("hello"), impl);
  const prop = await createProposal(add.newState, true, { proposalType: "remove", remove: { removed: 1 } }, impl);
  const self = await createProposal(bobGroup, true, selfRemoveProposal(), impl);

  const f = {
    keyPackages: [alice.publicPackage, bob.publicPackage, carol.publicPackage],
    commit: add.commit,
    proposal: prop.message,
    selfRemove: self.message,
    application: { version: "mls10", wireformat: "mls_private_message", privateMessage: app.privateMessage } as MLSMessage,
    welcome: { version: "mls10", wireformat: "mls_welcome", welcome } as MLSMessage,
    groupInfo: { version: "mls10", wireformat: "mls_group_info", groupInfo: gi } as MLSMessage,
    keyPackageMessage: { version: "mls10", wireformat: "mls_key_package", keyPackage: carol.publicPackage } as MLSMessage,
    ratchetTree: add.newState.ratchetTree,
  };
  return {
    ...f,
    messages: [f.commit, f.proposal, f.selfRemove, f.application, f.welcome, f.groupInfo, f.keyPackageMessage],
  };
}

// Federation set-up commands (docs/federation.md, section 0):
//
//   mimi-ds keys        makes the hub's key files before the first start and
//                       prints the peers-file entry to hand to other operators
//                       (domain, endpoint, CA, the hub's fanout key);
//   mimi-ds check-peer  proves, for each peer in a peers file, that it answers
//                       for its domain, that its fanout key is the configured
//                       one, and that it accepts this DS's client certificate
//                       over mutual TLS (FanoutService.Subscribe, which
//                       refuses a caller whose certificate it does not trust
//                       for a peer domain; Ping needs no certificate at all).
import { X509Certificate } from "node:crypto";
import { parseArgs } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createPeerTransport, FanoutTokenKeyError, FanoutTokenKeys, loadPeers, PeersConfigError, type Peer } from "../delivery/index.js";
import { HubIdentity } from "../ds/hub-identity.js";
import { firstDnsSan } from "../server/context.js";
import { ConfigError, readFlagFile } from "./config.js";
import { HUB_KEY_FILE, MARKER_FILE, prepareDataDir, readHubKeyFile } from "./integrity.js";
import { describeRpcError } from "./rpc-errors.js";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

export const keysUsage = `usage: mimi-ds keys --domain D [--data-dir DIR] [--fanout-token-key FILE] [--endpoint URL] [--ca FILE]
Makes <data-dir>/hub-keys.json and the FanoutAuthToken key (kept when they
exist), before the first \`serve\`, and prints on stdout the entry other
operators add to their peers file: {domain, endpoint, ca, dsSignatureKey}.
--endpoint and --ca only fill in that entry (your public URL, your CA file).
A data dir that has had a database gets no new key (--allow-new-keys overrides).`;

export const checkPeerUsage = `usage: mimi-ds check-peer --peers FILE --cert FILE --key FILE [--domain D ...]
For every peer in FILE (or only the --domain ones), with this DS's own
certificate and key (serve's --tls-cert and --tls-key): the peer answers Ping
for its domain, its HubInfo fanout key is the dsSignatureKey in FILE, and it
accepts the certificate over mutual TLS (FanoutService). Exit 0 when all pass.`;

export async function keysCommand(args: string[]): Promise<number> {
  const { values } = parsed("keys", () =>
    parseArgs({
      args,
      strict: true,
      options: {
        domain: { type: "string" },
        "data-dir": { type: "string" },
        "fanout-token-key": { type: "string" },
        endpoint: { type: "string" },
        ca: { type: "string" },
        "allow-new-keys": { type: "boolean" },
      },
    }),
  );
  const domain = values.domain ?? process.env.MIMI_DS_DOMAIN;
  if (domain === undefined || domain === "") throw new ConfigError("keys needs --domain (mimi-ds help keys)");
  const dataDir = resolve(values["data-dir"] ?? process.env.MIMI_DS_DATA_DIR ?? "data");
  const tokenFile = values["fanout-token-key"] ?? process.env.MIMI_DS_FANOUT_TOKEN_KEY ?? join(dataDir, "fanout-token-key.json");
  for (const note of prepareDataDir(dataDir)) console.error(note);
  const hubFile = join(dataDir, HUB_KEY_FILE);
  const hadHub = readHubKeyFile(hubFile) !== undefined;
  const hadToken = existsSync(tokenFile);
  // New keys are for a new DS: beside a database they were made for, a missing key is restored, not remade.
  if ((!hadHub || !hadToken) && existsSync(join(dataDir, MARKER_FILE)) && values["allow-new-keys"] !== true) {
    throw new ConfigError(
      `${dataDir} already has a database (${MARKER_FILE}): restore ${!hadHub ? hubFile : tokenFile} from a backup, or pass --allow-new-keys to make a new one`,
    );
  }
  const hub = await HubIdentity.open(domain, hubFile);
  try {
    FanoutTokenKeys.open(tokenFile);
  } catch (err) {
    if (err instanceof FanoutTokenKeyError) throw new ConfigError(`--fanout-token-key ${err.message}`);
    throw err;
  }
  console.error(`${hadHub ? "kept" : "created"} ${hubFile}`);
  console.error(`${hadToken ? "kept" : "created"} ${tokenFile}`);
  console.log(
    JSON.stringify(
      {
        domain,
        endpoint: values.endpoint ?? `https://${domain}:8443`,
        ca: values.ca ?? "<the PEM file of the CA that issues your certificates>",
        dsSignatureKey: Buffer.from(hub.fanoutPublicKey).toString("base64"),
      },
      null,
      2,
    ),
  );
  return 0;
}

/** How long an accepted Subscribe is held open before the check counts it as accepted. */
const SUBSCRIBE_PROBE_MS = 1500;

export async function checkPeerCommand(args: string[]): Promise<number> {
  const { values } = parsed("check-peer", () =>
    parseArgs({
      args,
      strict: true,
      options: { peers: { type: "string" }, cert: { type: "string" }, key: { type: "string" }, domain: { type: "string", multiple: true } },
    }),
  );
  const peersFile = values.peers ?? process.env.MIMI_DS_PEERS;
  const certFile = values.cert ?? process.env.MIMI_DS_TLS_CERT;
  const keyFile = values.key ?? process.env.MIMI_DS_TLS_KEY;
  if (peersFile === undefined || certFile === undefined || keyFile === undefined) throw new ConfigError("check-peer needs --peers, --cert and --key (mimi-ds help check-peer)");
  let directory;
  try {
    directory = loadPeers(peersFile);
  } catch (err) {
    if (err instanceof PeersConfigError) throw new ConfigError(`--peers ${err.message}`);
    throw err;
  }
  const cert = await readFlagFile("--cert", certFile);
  const key = await readFlagFile("--key", keyFile);
  let own: string | undefined;
  try {
    own = firstDnsSan(new X509Certificate(cert).subjectAltName ?? "");
  } catch (err) {
    throw new ConfigError(`--cert ${certFile}: not a PEM certificate: ${(err as Error).message}`);
  }
  if (own === undefined) throw new ConfigError(`--cert ${certFile} has no DNS subjectAltName: peers take this DS's domain from its first DNS name`);
  const wanted = values.domain?.map((d) => d.toLowerCase());
  const peers = wanted === undefined ? directory.peers : wanted.map((d) => directory.get(d) ?? fail(`--domain ${d} is not in ${peersFile}`));
  if (peers.length === 0) throw new ConfigError(`${peersFile} lists no peers`);
  console.error(`this DS presents a certificate for ${own} (its first DNS subjectAltName: the domain peers see)`);
  let failures = 0;
  for (const peer of peers) {
    const problem = await checkPeer(peer, { cert, key }, own);
    if (problem === undefined) console.log(`ok   ${peer.domain} (${peer.endpoint}): answers for ${peer.domain}, fanout key matches, accepts ${own}'s client certificate over mutual TLS`);
    else {
      failures++;
      console.log(`FAIL ${peer.domain} (${peer.endpoint}): ${problem}`);
    }
  }
  return failures === 0 ? 0 : 1;
}

const fail = (message: string): never => {
  throw new ConfigError(message);
};

/** Undefined when the peer passes every check, else what is wrong. */
export async function checkPeer(peer: Peer, own: { cert: Buffer; key: Buffer }, ownDomain: string): Promise<string | undefined> {
  const transport = createPeerTransport(peer, own, { defaultTimeoutMs: 10_000 });
  try {
    const hub = createClient(HubService, transport);
    let answered: string;
    try {
      answered = (await hub.ping({})).domain;
    } catch (err) {
      return describeRpcError(err, peer.endpoint);
    }
    if (answered !== peer.domain) return `the endpoint answers for ${answered}, not ${peer.domain}: check the peers file's endpoint`;
    try {
      const info = await hub.hubInfo({ cipherSuite: 1 });
      if (!Buffer.from(info.fanoutSignatureKey).equals(Buffer.from(peer.dsSignatureKey))) {
        return `its fanout key is ${Buffer.from(info.fanoutSignatureKey).toString("base64")}, but the peers file says ${Buffer.from(peer.dsSignatureKey).toString("base64")}: ask its operator for \`mimi-ds keys\` output and update dsSignatureKey`;
      }
    } catch (err) {
      return describeRpcError(err, peer.endpoint);
    }
    // Subscribe with resume_after 0 acknowledges nothing; entries it streams are dropped unacknowledged
    // (the peer keeps them for the real subscription). A refused certificate fails at once.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), SUBSCRIBE_PROBE_MS);
    try {
      // Accepted: an entry arrives, or the stream is still open when the probe ends it.
      for await (const _ of createClient(FanoutService, transport).subscribe({ resumeAfter: 0n }, { signal: abort.signal })) break;
      return undefined;
    } catch (err) {
      if (abort.signal.aborted) return undefined;
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
        return `it does not accept this DS's client certificate for ${ownDomain} (${err.rawMessage}): its peers file must list ${ownDomain} with the CA that issued your certificate, and the certificate's first DNS name must be ${ownDomain}`;
      }
      return describeRpcError(err, peer.endpoint);
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  } finally {
    transport.close();
  }
}

/** Flag parsing errors as a one-line ConfigError pointing at the command's help. */
function parsed<T>(command: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (mimi-ds help ${command})`);
  }
}

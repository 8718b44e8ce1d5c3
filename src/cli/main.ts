#!/usr/bin/env node
// mimi-ds command line: `serve` runs a DS; `dev-certs` and `keys` prepare
// one; `check-peer` checks a federation; the operator commands talk to a
// running DS. Exit status: 0 done, 1 the remote side refused or failed (one
// line saying what it answered), 2 a flag, file or start-up problem (one line
// naming the flag).
import { parseArgs } from "node:util";
import { pino } from "pino";
import { ConfigError, parseServeArgs, serveUsage } from "./config.js";
import { createService } from "./compose.js";
import { createDevCerts, DevCertsError } from "./devcerts.js";
import { adminCommand, adminCommands, adminUsage, type AdminCommand } from "./admin.js";
import { checkPeerCommand, checkPeerUsage, keysCommand, keysUsage } from "./federation.js";
import { RemoteError } from "./rpc-errors.js";
import { mimiDsVersion } from "./version.js";
import { registrationCommand, registrationUsage } from "./registration.js";

const usage = `usage: mimi-ds <command> [options]      (mimi-ds ${mimiDsVersion()})
commands:
  serve        run the Delivery Service (mimi-ds serve --help)
  dev-certs    --out DIR --domain D [--domain D2 ...] [--san NAME ...]: a local CA and per-domain certificates
  keys         make the hub's key files before the first start; print the peers-file entry for peers (mimi-ds help keys)
  check-peer   check every peer of a peers file over mutual TLS (mimi-ds help check-peer)
  hub-info, propose-removal, propose-addition, revoke-tokens, block, unblock, blocks:
               operator commands against a running DS (mimi-ds help admin)
  registration-key, registration-credential:
               provider keys and credentials for Register (mimi-ds help registration)
  version      print the version (also --version)`;

async function serve(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(serveUsage);
    return 0;
  }
  const config = parseServeArgs(args, process.env);
  const version = mimiDsVersion();
  const logger = pino({ level: config.logLevel, base: { domain: config.domain } });
  const service = await createService(config, logger, version);
  logger.info(
    {
      version,
      host: service.server.host,
      port: service.server.port,
      ...(service.metrics !== undefined ? { metrics: `http://${service.metrics.host}:${service.metrics.port}/metrics` } : {}),
      services: service.server.services,
    },
    "listening",
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        // A second Ctrl-C means: do not wait for the drain.
        logger.warn({ signal }, "forced exit");
        process.exit(130);
      }
      stopping = true;
      logger.info({ signal }, "shutting down");
      service.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, "shutdown failed");
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
}

async function devCerts(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: { out: { type: "string" }, domain: { type: "string", multiple: true }, san: { type: "string", multiple: true } },
    }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.out === undefined || values.domain === undefined || values.domain.length === 0) {
    throw new ConfigError("dev-certs needs --out DIR and at least one --domain (--san NAME adds DNS names, e.g. the endpoint's host)");
  }
  const result = await createDevCerts(values.out, values.domain, { extraNames: values.san ?? [] });
  console.log(`${result.caCreated ? "created" : "kept"} ${result.caCert}`);
  for (const d of result.domains) {
    console.log(`${d.created ? "created" : "kept"} ${d.cert} ${d.key} (DNS names: ${d.names.join(", ")})`);
    if (d.missing.length > 0) console.error(`mimi-ds: ${d.cert} exists without ${d.missing.join(", ")}: delete ${d.cert} and ${d.key} to make it again with them`);
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve(rest);
    case "dev-certs":
      return devCerts(rest);
    case "keys":
      return keysCommand(rest);
    case "check-peer":
      return checkPeerCommand(rest);
    case "registration-key":
    case "registration-credential":
      return registrationCommand(command, rest);
    case "version":
    case "--version":
    case "-V":
      console.log(mimiDsVersion());
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h": {
      const topic = rest[0];
      console.log(
        topic === "admin" ? adminUsage : topic === "keys" ? keysUsage : topic === "check-peer" ? checkPeerUsage : topic === "serve" ? serveUsage : topic === "registration" ? registrationUsage : usage,
      );
      return command === undefined ? 2 : 0;
    }
    default:
      if ((adminCommands as readonly string[]).includes(command)) return adminCommand(command as AdminCommand, rest);
      console.error(`mimi-ds: unknown command: ${command} (mimi-ds help lists them)`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const code = (err as { code?: unknown }).code;
    if (err instanceof ConfigError || err instanceof DevCertsError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))) {
      console.error(`mimi-ds: ${(err as Error).message}`);
      process.exit(2);
    }
    if (err instanceof RemoteError) {
      console.error(`mimi-ds: ${err.message}`);
      process.exit(1);
    }
    console.error(err);
    process.exit(1);
  },
);

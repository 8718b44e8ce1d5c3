#!/usr/bin/env node
// mimi-ds command line: `serve` runs a DS, `dev-certs` makes development TLS material.
import { parseArgs } from "node:util";
import { pino } from "pino";
import { ConfigError, parseServeArgs, serveUsage } from "./config.js";
import { createService } from "./compose.js";
import { createDevCerts, DevCertsError } from "./devcerts.js";
import { adminCommand, adminUsage } from "./admin.js";
import { registrationCommand, registrationUsage } from "./registration.js";

const usage = `usage: mimi-ds <command> [options]
commands:
  serve       run the Delivery Service (see: mimi-ds serve --help)
  dev-certs   --out DIR --domain D [--domain D2 ...]: a local CA and per-domain certificates
  hub-info, propose-removal, propose-addition: operator commands against a running DS (mimi-ds help admin)
  registration-key, registration-credential: provider keys and credentials for Register (mimi-ds help registration)`;

async function serve(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(serveUsage);
    return 0;
  }
  const config = parseServeArgs(args, process.env);
  const logger = pino({ level: config.logLevel, base: { domain: config.domain } });
  const service = await createService(config, logger);
  logger.info({ host: service.server.host, port: service.server.port, services: service.server.services }, "listening");

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
  const { values } = parseArgs({
    args,
    strict: true,
    options: { out: { type: "string" }, domain: { type: "string", multiple: true } },
  });
  if (values.out === undefined || values.domain === undefined || values.domain.length === 0) {
    throw new ConfigError("dev-certs needs --out DIR and at least one --domain");
  }
  const result = await createDevCerts(values.out, values.domain);
  console.log(`${result.caCreated ? "created" : "kept"} ${result.caCert}`);
  for (const d of result.domains) console.log(`${d.created ? "created" : "kept"} ${d.cert} ${d.key}`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve(rest);
    case "dev-certs":
      return devCerts(rest);
    case "hub-info":
    case "propose-removal":
    case "propose-addition":
      return adminCommand(command, rest);
    case "registration-key":
    case "registration-credential":
      return registrationCommand(command, rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(rest[0] === "admin" ? adminUsage : rest[0] === "registration" ? registrationUsage : usage);
      return command === undefined ? 2 : 0;
    default:
      console.error(`unknown command: ${command}\n${usage}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof DevCertsError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`mimi-ds: ${(err as Error).message}`);
      process.exit(2);
    }
    console.error(err);
    process.exit(1);
  },
);

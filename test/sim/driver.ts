// The fault simulation's driver: a seeded random walk over every DS operation
// and fault, run against the world (world.ts), with the invariants checked
// after every step. `runSimulation` throws a SimFailure carrying the seed and
// the trace that reproduces the run (`make soak SEED=... STEPS=...`).
import { Code, ConnectError } from "@connectrpc/connect";
import { keyPackageMessage } from "../../src/client/index.js";
import { groupKey } from "../../src/ds/groups.js";
import { decodeDSResponse, makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { check, codeName, DSErrorCode, groupName, randomBytes, SimFailure, SimGroup, SimWorld, type SimClient, type SimDomain } from "./world.js";

export interface SimConfig {
  readonly seed: number;
  readonly steps: number;
  /** Serve flags of every domain (e.g. a tiny group cache, a snapshot every commit). */
  readonly serveArgs?: readonly string[];
  readonly clientsPerDomain?: number;
  readonly domains?: readonly string[];
  /** Progress lines (soak runs). */
  readonly onStep?: (step: number, line: string) => void;
}

export interface SimReport {
  readonly seed: number;
  readonly steps: number;
  readonly delivered: number;
  readonly ops: Record<string, number>;
  readonly ms: number;
}

type Op = { readonly name: string; readonly weight: number; readonly run: () => Promise<string> };

// ---------------------------------------------------------------- who may act

/** Not in a group (nor added to one, nor still reading its way out of one), its DS up. */
const isFree = (w: SimWorld, c: SimClient): boolean => c.group === undefined && !c.leaving && c.domain.up && !w.reserved.has(c.name);

/** A member that has joined, read everything, and whose DS and hub are up: it can send and commit. */
function active(w: SimWorld, g: SimGroup): SimClient[] {
  return [...g.members]
    .map((n) => w.client(n))
    .filter((c) => c.group === g.key && c.member.state !== undefined && c.expected.length === 0 && c.lazyUntil <= w.step && w.reachable(c, g) && c.member.epoch === g.epoch);
}

const targetedForRemoval = (g: SimGroup, c: SimClient): boolean => g.pending.some((p) => p.kind === "remove" && p.target === c.name);
const hasPendingAdd = (g: SimGroup): boolean => g.pending.some((p) => p.kind === "add");
/** Members that may commit: a pending Remove's target cannot (it cannot commit its own removal). */
const committers = (w: SimWorld, g: SimGroup): SimClient[] => active(w, g).filter((c) => !targetedForRemoval(g, c));
const openGroups = (w: SimWorld): SimGroup[] => w.liveGroups().filter((g) => !g.closed && g.hub.up);

// ---------------------------------------------------------------- the model's side of a commit

/**
 * A commit the hub accepted: every member of the old epoch but the committer
 * reads it (the removed ones as their removal), joiners get their Welcome,
 * the pending proposals are applied (a member commit) or dropped (external).
 */
function committed(w: SimWorld, g: SimGroup, o: { committer?: SimClient; removed?: readonly string[]; added?: readonly string[]; external?: SimClient; resync?: boolean }): void {
  const viaPending = o.external === undefined;
  const removed = new Set([...(o.removed ?? []), ...(viaPending ? g.pending.filter((p) => p.kind === "remove").map((p) => p.target) : [])]);
  const added = [...(o.added ?? []), ...(viaPending ? g.pending.filter((p) => p.kind === "add").map((p) => p.target) : [])];
  for (const p of g.pending) if (p.kind === "add") w.reserved.delete(p.target);
  for (const n of g.members) {
    if (n === o.committer?.name) continue;
    if (o.resync === true && n === o.external?.name) w.expect([n], { kind: "stale", group: g.key });
    else w.expect([n], { kind: removed.has(n) ? "removed" : "commit", group: g.key });
  }
  for (const n of removed) {
    g.members.delete(n);
    w.client(n).leaving = true;
  }
  for (const n of added) {
    g.members.add(n);
    w.client(n).group = g.key;
    w.expect([n], { kind: "joined", group: g.key });
  }
  if (o.external !== undefined) {
    g.members.add(o.external.name);
    o.external.group = g.key;
  }
  g.pending.length = 0;
  g.epoch++;
}

// ---------------------------------------------------------------- operations

function operations(w: SimWorld): Op[] {
  const rng = w.rng;
  const ops: Op[] = [];
  const add = (name: string, weight: number, run: () => Promise<string>) => ops.push({ name, weight, run });
  const free = w.clients.filter((c) => isFree(w, c));
  const groups = openGroups(w);

  if (free.length > 0 && w.liveGroups().length < 4) {
    const c = rng.pick(free);
    const open = rng.chance(0.6);
    add("create", groups.length === 0 ? 50 : 5, async () => {
      const sender = await w.hubSender(c.domain);
      const r = await w.request(`${c.name} create_group`, () => c.member.createGroup(sender, open ? [makeExternalJoinPolicyExtension("open")] : []));
      if (!r.ok) return "refused";
      const g = new SimGroup(r.value, groupKey(r.value), c.domain);
      g.openJoins = open;
      g.createRequest = w.lastCreateRequest;
      g.members.add(c.name);
      c.group = g.key;
      w.groups.push(g);
      return `${c.name} creates ${g.name} on ${c.domain.name}${open ? " (open to external joins)" : ""}`;
    });
  }

  for (const g of groups) {
    const act = active(w, g);
    const com = committers(w, g);
    const joinable = free.filter((c) => c.domain.up);

    // RFC 9420 clients (ts-mls among them) send no application data while proposals are pending.
    if (act.length > 0 && g.pending.length === 0) {
      const m = rng.pick(act);
      add("send", 25, async () => {
        const text = `m${w.step}.${m.name}`;
        await w.request(`${m.name} send_message`, () => m.member.send(text));
        w.expect(g.members, { kind: "application", group: g.key, text }, [m.name]);
        return `${m.name} sends "${text}" to ${g.name}`;
      });
    }

    if (com.length > 0 && joinable.length > 0) {
      const m = rng.pick(com);
      const joiners = rng.some(joinable, 1 + rng.int(3));
      add("add", 12, async () => {
        // The KeyPackages come through m's DS, from each joiner's own DS.
        await w.request(`${m.name} add_clients ${joiners.map((j) => j.name)}`, () => m.member.addClients(joiners.map((j) => j.id)));
        committed(w, g, { committer: m, added: joiners.map((j) => j.name) });
        // Some joiners fetch their tree (welcome_info) only epochs later.
        for (const j of joiners) if (rng.chance(0.3)) j.lazyUntil = w.step + 1 + rng.int(4);
        return `${m.name} adds ${joiners.map((j) => j.name).join(",")} to ${g.name}`;
      });
    }

    if (com.length > 0 && !hasPendingAdd(g)) {
      const m = rng.pick(com);
      const others = [...g.members].filter((n) => n !== m.name && !g.pending.some((p) => p.kind === "remove" && p.target === n));
      if (others.length > 0) {
        const targets = rng.some(others, 1 + rng.int(2));
        add("remove", 6, async () => {
          await w.request(`${m.name} remove_clients`, () => m.member.remove(targets.map((t) => w.client(t).id)));
          committed(w, g, { committer: m, removed: targets });
          return `${m.name} removes ${targets.join(",")} from ${g.name}`;
        });
      }
      add("update", 8, async () => {
        await w.request(`${m.name} update_client`, () => m.member.update());
        committed(w, g, { committer: m });
        return `${m.name} updates in ${g.name}`;
      });
    }

    if (act.length > 0) {
      const m = rng.pick(act);
      add("self_remove", 5, async () => {
        const pending = g.pending.find((p) => p.kind === "remove" && p.target === m.name);
        // Its own self-remove again is the same bytes (ts-mls signs deterministically): a retry, ok and
        // stored once. A removal the hub proposed already: refused.
        const r = await w.request(`${m.name} self_remove_client`, () => m.member.selfRemove(), pending?.by === "hub" ? [DSErrorCode.conflicting_proposal] : []);
        if (pending !== undefined) {
          check(r.ok === (pending.by === "member"), `${m.name}: a self-remove with a pending ${pending.by} removal answered ${r.ok ? "ok" : codeName(r.code)}`);
          return `${m.name} self-removes again from ${g.name}: ${r.ok ? "a retry, stored once" : `refused (${codeName(r.code)})`}`;
        }
        g.pending.push({ kind: "remove", target: m.name, by: "member" });
        w.expect(g.members, { kind: "proposal", group: g.key }, [m.name]);
        return `${m.name} self-removes from ${g.name}`;
      });
    }

    if (com.length > 0 && g.pending.length > 0) {
      const m = rng.pick(com);
      add("commit_pending", 14, async () => {
        await w.request(`${m.name} commit of ${g.pending.length} pending`, () => m.member.commitPending());
        const what = g.pending.map((p) => `${p.kind} ${p.target}`).join(",");
        committed(w, g, { committer: m });
        return `${m.name} commits the pending ${what} in ${g.name}`;
      });
    }

    if (g.hub.up && g.members.size > 0) {
      const target = w.client(rng.pick([...g.members]));
      add("hub_remove", 4, async () => {
        // The hub's own removal again is the same proposal (deterministic signature): ok, stored once.
        // A member's self-remove pending already: refused.
        const pending = g.pending.find((p) => p.kind === "remove" && p.target === target.name);
        try {
          await g.hub.admin.proposeRemoval({ groupId: g.id, clientId: target.id });
        } catch (err) {
          if (pending?.by === "member" && err instanceof ConnectError && err.code === Code.FailedPrecondition) return `the hub proposes removing ${target.name}, who self-removed: refused`;
          throw new SimFailure(`AdminService ProposeRemoval of ${target.name} failed: ${(err as Error).message}`);
        }
        check(pending?.by !== "member", `the hub's removal of ${target.name}, who self-removed already, was accepted`);
        if (pending !== undefined) return `the hub proposes removing ${target.name} again: the same proposal, stored once`;
        g.pending.push({ kind: "remove", target: target.name, by: "hub" });
        w.expect(g.members, { kind: "proposal", group: g.key });
        return `the hub of ${g.name} proposes removing ${target.name}`;
      });
    }

    const addable = joinable.filter((c) => c.domain.up);
    if (g.hub.up && addable.length > 0) {
      const c = rng.pick(addable);
      // KeyPackages are fetched by a registered client of the hub's domain (anonymous fetches are refused).
      const requester = w.clients.find((x) => x.domain === g.hub);
      if (requester !== undefined) add("hub_add", 3, async () => {
        const kps = await w.request(`key_packages of ${c.name} at ${g.hub.name}`, () => g.hub.ds.keyPackages([c.id], [1], requester.member.registeredAuth()));
        if (!kps.ok) return "no KeyPackage";
        try {
          await g.hub.admin.proposeAddition({ groupId: g.id, keyPackage: keyPackageMessage(kps.value[0]!) });
        } catch (err) {
          throw new SimFailure(`AdminService ProposeAddition of ${c.name} failed: ${(err as Error).message}`);
        }
        g.pending.push({ kind: "add", target: c.name, by: "hub" });
        w.reserved.add(c.name);
        w.expect(g.members, { kind: "proposal", group: g.key });
        return `the hub of ${g.name} proposes adding ${c.name}`;
      });
    }

    if (joinable.length > 0 && g.members.size > 0) {
      const c = rng.pick(joinable);
      add("external_join", 4, async () => {
        // Groups not open to external joins take only resyncs: a stranger is refused and nothing changes.
        const r = await w.request(`${c.name} external_join`, () => c.member.externalJoin(g.id), g.openJoins ? [] : [DSErrorCode.permission_denied]);
        if (!r.ok) return `${c.name} tries to join ${g.name} (resync only) by external commit: refused`;
        check(g.openJoins, `${c.name} joined ${g.name}, which is not open to external joins`);
        committed(w, g, { external: c });
        return `${c.name} joins ${g.name} by external commit`;
      });
    }

    // ts-mls 1.6.4 cannot resync the only member (its tree would be empty for a moment).
    if (act.length > 0 && g.members.size > 1) {
      const m = rng.pick(act);
      add("resync", 3, async () => {
        await w.request(`${m.name} resync`, () => m.member.externalJoin(g.id, true));
        committed(w, g, { external: m, resync: true });
        return `${m.name} resyncs in ${g.name}`;
      });
    }

    if (com.length >= 2 && !hasPendingAdd(g)) {
      const [a, b] = rng.some(com, 2) as [SimClient, SimClient];
      add("race", 4, async () => {
        const [ra, rb] = await Promise.all([
          w.request(`${a.name} racing update`, () => a.member.update(), [DSErrorCode.wrong_epoch]),
          w.request(`${b.name} racing update`, () => b.member.update(), [DSErrorCode.wrong_epoch]),
        ]);
        check(ra.ok !== rb.ok, `two commits for epoch ${g.epoch}: ${ra.ok ? "both" : "neither"} accepted`);
        const winner = ra.ok ? a : b;
        committed(w, g, { committer: winner });
        return `${a.name} and ${b.name} race in ${g.name}: ${winner.name} wins`;
      });
    }

    if (com.length > 0 && g.pending.length === 0 && rng.chance(0.5)) {
      const m = rng.pick(com);
      add("reinit", 1, async () => {
        // request_group_id names the client's own DS; a successor on the group's hub gets an id the client makes (docs/protocol.md #29).
        const successor = new TextEncoder().encode(`${randomBytes(16).toString("base64url")}@${g.hub.name}`);
        await w.request(`${m.name} reinitialize_group`, () => m.member.reinitialize(successor));
        committed(w, g, { committer: m });
        g.closed = true;
        // The group takes no more commits: its members move on.
        for (const n of g.members) w.client(n).leaving = true;
        g.members.clear();
        m.leaving = false;
        m.group = undefined;
        return `${m.name} reinitializes ${g.name}`;
      });
    }

    if (com.length > 0 && g.pending.length === 0) {
      const m = rng.pick(com);
      add("delete", 2, async () => {
        await w.request(`${m.name} delete_group`, () => m.member.deleteGroup());
        committed(w, g, { committer: m, removed: [...g.members].filter((n) => n !== m.name) });
        g.deleted = true;
        g.members.clear();
        m.group = undefined;
        return `${m.name} deletes ${g.name}`;
      });
    }

    // An attacker: a commit adding by reference outside add_clients (no Welcome) changes nothing.
    if (com.length > 0 && hasPendingAdd(g)) {
      const m = rng.pick(com);
      add("attack_update_with_add", 2, async () => {
        const r = await w.request(`${m.name} update_client with a pending Add`, () => m.member.update(), [DSErrorCode.invalid_request]);
        check(!r.ok, `${m.name}: an update_client adding a member without a Welcome was accepted`);
        return `${m.name} tries update_client with a pending Add in ${g.name}: refused`;
      });
    }
  }

  // An attacker replays the create_group of a deleted group.
  const gone = w.groups.filter((g) => g.deleted && g.createRequest !== undefined && g.hub.up);
  if (gone.length > 0) {
    const g = rng.pick(gone);
    add("attack_replay_create", 2, async () => {
      const answer = decodeDSResponse(await g.hub.ds.submit(g.createRequest!)).responseBody;
      check(answer.responseType === "error" && answer.error.code === DSErrorCode.group_exists, `the replayed create_group of deleted ${g.name} answered ${answer.responseType}`);
      return `an attacker replays the create_group of deleted ${g.name}: refused`;
    });
  }

  const up = w.clients.filter((c) => c.domain.up);
  if (up.length > 0) {
    const c = rng.pick(up);
    add("publish", 3, async () => {
      await w.request(`${c.name} publish`, () => c.member.publishKeyPackages(2));
      return `${c.name} publishes 2 KeyPackages`;
    });
    const l = rng.pick(up);
    add("lazy", 3, async () => {
      l.lazyUntil = w.step + 1 + rng.int(5);
      return `${l.name} stops reading until step ${l.lazyUntil}`;
    });
  }

  // Faults.
  const running = [...w.domains.values()].filter((d) => d.up);
  if (running.length === w.domains.size) {
    const d = rng.pick(running);
    add("kill", 2, async () => {
      await d.crash();
      await d.start();
      return `SIGKILL ${d.name}, restarted`;
    });
    add("down", 1, async () => {
      await d.crash();
      w.downUntil.set(d.name, w.step + 2 + rng.int(5));
      return `SIGKILL ${d.name}, down until step ${w.downUntil.get(d.name)}`;
    });
    const busy = groups.filter((g) => g.pending.length === 0).flatMap((g) => active(w, g).map((m) => ({ g, m })));
    if (busy.length > 0) {
      const { g, m } = rng.pick(busy);
      const victim = rng.pick([g.hub, m.domain]);
      add("kill_in_traffic", 2, () => killDuringTraffic(w, g, m, victim));
    }
  }
  return ops;
}

/** Sends from `m` one after another while `victim` is SIGKILLed: the acknowledged ones must arrive, the one in flight may. */
async function killDuringTraffic(w: SimWorld, g: SimGroup, m: SimClient, victim: SimDomain): Promise<string> {
  const outcomes: { text: string; ok: boolean }[] = [];
  let stop = false;
  const traffic = (async () => {
    for (let i = 0; !stop && i < 200; i++) {
      const text = `m${w.step}.${m.name}.${i}`;
      try {
        await m.member.send(text);
        outcomes.push({ text, ok: true });
      } catch {
        outcomes.push({ text, ok: false });
        return;
      }
    }
  })();
  await new Promise((r) => setTimeout(r, 20 + w.rng.int(200)));
  await victim.crash();
  stop = true;
  await traffic;
  await victim.start();
  for (const o of outcomes) w.expect(g.members, { kind: "application", group: g.key, text: o.text, ...(o.ok ? {} : { maybe: true }) }, [m.name]);
  // After the restart the sender is still a member in good standing: one more, acknowledged.
  const text = `m${w.step}.${m.name}.after`;
  await w.request(`${m.name} send after the restart`, () => m.member.send(text));
  w.expect(g.members, { kind: "application", group: g.key, text }, [m.name]);
  return `${m.name} sends ${outcomes.length} to ${g.name} while ${victim.name} is SIGKILLed (${outcomes.filter((o) => o.ok).length} acknowledged)`;
}

function choose(w: SimWorld, ops: readonly Op[]): Op {
  const total = ops.reduce((s, o) => s + o.weight, 0);
  let r = w.rng.next() * total;
  for (const o of ops) if ((r -= o.weight) < 0) return o;
  return ops[ops.length - 1]!;
}

export async function runSimulation(config: SimConfig): Promise<SimReport> {
  const started = Date.now();
  const w = await SimWorld.create(config.seed, {
    domains: config.domains ?? ["a.sim", "b.sim"],
    clientsPerDomain: config.clientsPerDomain ?? 5,
    serveArgs: config.serveArgs ?? [],
  });
  try {
    for (w.step = 1; w.step <= config.steps; w.step++) {
      for (const [name, until] of w.downUntil) {
        if (until > w.step) continue;
        await w.domains.get(name)!.start();
        w.downUntil.delete(name);
        w.log(`${name} restarted`);
      }
      const op = choose(w, operations(w));
      const line = await op.run();
      w.count(op.name);
      w.log(line);
      config.onStep?.(w.step, line);
      await w.checkInvariants();
    }
    await w.finish();
    return { seed: config.seed, steps: config.steps, delivered: w.delivered, ops: Object.fromEntries(w.counts), ms: Date.now() - started };
  } catch (err) {
    const cause = err instanceof Error ? err.message : String(err);
    const trace = w.trace.slice(-80).join("\n  ");
    throw new SimFailure(
      `simulation seed ${config.seed} failed at step ${w.step}: ${cause}\n` +
        `reproduce: make soak SEED=${config.seed} STEPS=${w.step} SERVE_ARGS='${(config.serveArgs ?? []).join(" ")}'\n` +
        `trace (last ${Math.min(80, w.trace.length)} steps):\n  ${trace}`,
    );
  } finally {
    await w.close();
  }
}

export { groupName };

// Tests that read a local client's queue straight from the store first pull
// its group feeds into it, as its Receive stream would (src/delivery/inbox.ts).
import type { Store } from "../../src/store/port.js";

export async function pullInbox(store: Store, clientId: string): Promise<void> {
  while (((await store.apply({ ops: [{ kind: "pullFeeds", clientId }] })).pulled ?? 0) > 0);
}

/** Lookups into a room's state as the auth rules ask for it: by type and state key, parsed once. */
import { pduOf, type Pdu } from "../../events/index.js";
import { stateKeyOf, type StateMap } from "../../storage/rooms.js";

export function stateLookup(state: StateMap): (type: string, stateKey: string) => Pdu | undefined {
  const cache = new Map<string, Pdu>();
  return (type, stateKey) => {
    const key = stateKeyOf(type, stateKey);
    let pdu = cache.get(key);
    if (!pdu) {
      const stored = state.get(key);
      if (!stored) return undefined;
      pdu = pduOf(stored);
      cache.set(key, pdu);
    }
    return pdu;
  };
}

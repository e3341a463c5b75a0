/**
 * Delayed leaves handed to the bundled LiveKit service (MSC4195), kept so that a restart of
 * every process does not drop them: the next process to start adopts the ones whose owner is
 * gone, and goes on restarting the leave while the participant is on the SFU.
 */

export interface StoredDelegation {
  /** The LiveKit room name and participant identity: one delegation per pair. */
  room: string;
  identity: string;
  userId: string;
  delayId: string;
  delayTimeoutMs: number;
  /** The homeserver whose delayed-event API the job calls. */
  serverName: string;
  /** The worker (instance) that runs the job. */
  owner: string;
}

export interface LiveKitDelegationStore {
  /** Records a delegation, replacing any for the same room and identity. */
  put(delegation: StoredDelegation, now: number): Promise<void>;
  /** Forgets a delegation, unless it was replaced by one with another delay ID meanwhile. */
  remove(room: string, identity: string, delayId: string): Promise<void>;
  all(): Promise<StoredDelegation[]>;
  /** Moves a delegation from an owner that is gone to `to`; false when another process got there first. */
  claim(room: string, identity: string, from: string, to: string): Promise<boolean>;
}

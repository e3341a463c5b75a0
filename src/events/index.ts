/**
 * The Matrix data model as pure functions: canonical JSON, hashes, event IDs, signing,
 * redaction, room versions and authorisation rules. Nothing here does I/O or imports
 * from the rest of Switchboard.
 */
export { canonicalJson, canonicalJsonBytes, compareCodePoints, CanonicalJsonError } from "./canonical_json.js";
export { CANONICAL_JSON_MAX_INT, CANONICAL_JSON_MIN_INT } from "./canonical_json.js";
export { Base64Error, decodeBase64, decodeBase64Url, encodeBase64, encodeBase64Url } from "./base64.js";
export {
  DEFAULT_ROOM_VERSION,
  getRoomVersion,
  isSupportedRoomVersion,
  ROOM_VERSIONS,
  roomVersionStability,
  type RoomVersion,
} from "./room_versions.js";
export {
  EventTypes,
  isRecord,
  isStateEvent,
  membershipOf,
  pduOf,
  roomIdOfEvent,
  type Membership,
  type Pdu,
  type StateKeyPair,
  type StateLookup,
} from "./types.js";
export {
  createEventIdOfRoom,
  isCompliantUserId,
  isValidServerName,
  isValidUserId,
  roomIdOfCreateEventId,
  serverNameOf,
  utf8Length,
} from "./ids.js";
export {
  contentHash,
  contentHashBytes,
  eventIdFor,
  referenceHashBytes,
  roomIdForCreateEvent,
  verifyContentHash,
} from "./hashes.js";
export {
  formatSigningKeyFile,
  generateSigningKey,
  hashAndSignEvent,
  hashSignAndIdentify,
  parseSigningKeyFile,
  publicKeyBase64,
  seedFromSigningKey,
  signEvent,
  signingKeyFromSeed,
  signJson,
  verifyEventSignature,
  verifyJsonSignature,
  verifyKeyFromBase64,
  verifyKeyFromBytes,
  type Signatures,
  type Signer,
} from "./signing.js";
export { redact, redactContent } from "./redaction.js";
export {
  checkEventLimits,
  EventLimitError,
  MAX_ID_BYTES,
  MAX_PDU_BYTES,
  MAX_STATE_KEY_BYTES,
  maxStateKeyBytes,
  MSC3757_MAX_STATE_KEY_BYTES,
  MSC4354_MAX_STICKY_MS,
} from "./limits.js";
export { buildEvent, BuildEventError, previewEventId, type BuildEventInput, type EventSigner } from "./build.js";
export {
  creatorsInUsersProblem,
  PowerLevels,
  powerLevelsChangeProblem,
  powerLevelsContentProblem,
  roomCreator,
  roomCreators,
} from "./power_levels.js";
export {
  AuthError,
  authEventTypes,
  authStateKeys,
  checkAuthEventsList,
  checkEventAuth,
  stateKeyOwner,
  stateLookupFromEvents,
  v12RuleNumber,
  type AuthOptions,
} from "./auth_rules.js";
export { redactsOf, toClientEvent, type ClientEvent } from "./client_event.js";
export {
  isPowerEvent,
  lexicographicalTopologicalSort,
  partitionStateSets,
  resolveState,
  StateResError,
  stateIdsOf,
  stateKeyOf,
  type EventLoader,
  type StateIds,
  type StateResEvent,
  type StateResOptions,
} from "./state_res/index.js";

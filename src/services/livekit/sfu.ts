/**
 * Everything that talks LiveKit: minting access tokens, and the SFU's server
 * API (Twirp over HTTP, at the SFU's own host) for rooms and participants.
 * All through `livekit-server-sdk`, so the wire format is LiveKit's own.
 */
import type { RoomServiceClient, WebhookReceiver } from "livekit-server-sdk";
import type { LiveKitConfig } from "../../config/config.js";
import { MatrixError } from "../../errors.js";
import { systemClock, type Clock } from "../clock.js";
import { LiveKitTokenSigner } from "./jwt.js";
import { RoomCache } from "./room_cache.js";

type Sdk = typeof import("livekit-server-sdk");
let sdkModule: Promise<Sdk> | undefined;
/**
 * The SDK, with jose and protobuf behind it, holds about 10 MiB once loaded: it is loaded on first
 * use, so a server without `livekit:` never holds it (nothing else imports it).
 */
const sdk = (): Promise<Sdk> => (sdkModule ??= import("livekit-server-sdk"));

/** Tokens are good for joining for an hour, as lk-jwt-service's are. */
export const TOKEN_TTL_SECONDS = 3600;
/** Seconds a created room waits for its first participant, and lingers after the last one leaves. */
export const ROOM_EMPTY_TIMEOUT_S = 300;
export const ROOM_DEPARTURE_TIMEOUT_S = 20;
/** The SFU answers on the same network; a slow answer is as bad as none for a joining user. */
const API_TIMEOUT_S = 5;
/**
 * The room service's own token (allowed to create rooms, nothing else) lives this long and is
 * used for half of it, so that one in use always has minutes left whatever the SFU's clock says.
 */
const ADMIN_TOKEN_TTL_S = 600;
const ADMIN_TOKEN_REUSE_MS = (ADMIN_TOKEN_TTL_S * 1000) / 2;

/** What a LiveKit webhook says about one participant, reduced to what delegated leaves need. */
export interface SfuParticipantEvent {
  room: string;
  identity: string;
  kind: "joined" | "left_intentionally" | "left_aborted";
}

/** LiveKit's DisconnectReason.CLIENT_INITIATED: the user hung up, rather than losing the connection. */
const CLIENT_INITIATED = 1;

export class SfuApi {
  #clients: Promise<{ rooms: RoomServiceClient; webhooks: WebhookReceiver }> | undefined;
  /** A room service client whose token (roomCreate only) is signed once and reused until `renewAt`. */
  #creator: { client: Promise<RoomServiceClient>; renewAt: number } | undefined;
  readonly #rooms: RoomCache;
  #signer: Promise<LiveKitTokenSigner> | undefined;

  constructor(
    private readonly lk: LiveKitConfig,
    private readonly clock: Clock = systemClock,
  ) {
    this.#rooms = new RoomCache(clock);
  }

  #api(): Promise<{ rooms: RoomServiceClient; webhooks: WebhookReceiver }> {
    const lk = this.lk;
    return (this.#clients ??= sdk().then(({ RoomServiceClient, WebhookReceiver }) => ({
      // The SDK turns ws(s):// into http(s):// for the API itself.
      rooms: new RoomServiceClient(lk.url, lk.apiKey, lk.apiSecret.reveal(), { requestTimeout: API_TIMEOUT_S, failover: false }),
      webhooks: new WebhookReceiver(lk.apiKey, lk.apiSecret.reveal()),
    })));
  }

  /**
   * A join token for one room and identity. Never a room creation right (the service creates
   * rooms; the right would also let the holder delete any room), never hidden.
   */
  async mintToken(room: string, identity: string, grants: { canPublish: boolean; canUpdateOwnMetadata: boolean }): Promise<string> {
    const signer = await (this.#signer ??= sdk().then(({ claimsToJwtPayload }) => new LiveKitTokenSigner(this.lk.apiKey, this.lk.apiSecret.reveal(), claimsToJwtPayload)));
    const video = {
      roomJoin: true,
      room,
      canPublish: grants.canPublish,
      canSubscribe: true,
      canUpdateOwnMetadata: grants.canUpdateOwnMetadata,
      roomCreate: false,
      hidden: false,
    };
    return signer.sign({ video }, identity, TOKEN_TTL_SECONDS);
  }

  /**
   * Creates the room, or finds it there already; 500 `M_UNKNOWN` naming the cause when the SFU fails.
   * A room made sure of in the last seconds is not asked for again (see RoomCache).
   */
  ensureRoom(room: string): Promise<void> {
    return this.#rooms.ensure(room, () => this.#createRoom(room));
  }

  async #createRoom(room: string): Promise<void> {
    try {
      const rooms = await this.#roomCreator();
      await rooms.createRoom({
        name: room,
        emptyTimeout: ROOM_EMPTY_TIMEOUT_S,
        departureTimeout: ROOM_DEPARTURE_TIMEOUT_S,
        maxParticipants: 0,
      });
    } catch (err) {
      throw new MatrixError(500, "M_UNKNOWN", `Unable to create the room on the LiveKit SFU (${this.#apiHost()}): ${describe(err, await sdk())}`);
    }
  }

  /**
   * The SDK signs a token per call unless given one: CreateRoom's is the same for every room, so it
   * is signed once per half-life instead.
   */
  #roomCreator(): Promise<RoomServiceClient> {
    const now = this.clock.now();
    if (this.#creator && now < this.#creator.renewAt) return this.#creator.client;
    const lk = this.lk;
    const client = sdk().then(async ({ AccessToken, RoomServiceClient }) => {
      const admin = new AccessToken(lk.apiKey, lk.apiSecret.reveal(), { ttl: ADMIN_TOKEN_TTL_S });
      admin.addGrant({ roomCreate: true });
      const token = await admin.toJwt();
      return new RoomServiceClient(lk.url, lk.apiKey, lk.apiSecret.reveal(), { requestTimeout: API_TIMEOUT_S, failover: false, token });
    });
    const creator = { client, renewAt: now + ADMIN_TOKEN_REUSE_MS };
    this.#creator = creator;
    // A failure (the SDK failing to load) is not kept: the next call tries again.
    client.catch(() => {
      if (this.#creator === creator) this.#creator = undefined;
    });
    return client;
  }

  /** True when present, false when the SFU says not; throws when the SFU cannot tell. */
  async participantPresent(room: string, identity: string): Promise<boolean> {
    const { rooms } = await this.#api();
    try {
      await rooms.getParticipant(room, identity);
      return true;
    } catch (err) {
      const { TwirpError } = await sdk();
      if (err instanceof TwirpError && (err.code === "not_found" || err.status === 404)) return false;
      throw err;
    }
  }

  /** Checks a webhook's signature (a token over the body's SHA-256) and reads it. */
  async receiveWebhook(body: string, authorization: string | undefined): Promise<SfuParticipantEvent | undefined> {
    const { webhooks } = await this.#api();
    const event = await webhooks.receive(body, authorization?.replace(/^Bearer\s+/i, ""));
    // A closed room is made again on the next request rather than taken to be there.
    if (event.event === "room_finished" && event.room?.name) this.#rooms.forget(event.room.name);
    const room = event.room?.name;
    const identity = event.participant?.identity;
    if (!room || !identity) return undefined;
    if (event.event === "participant_joined") return { room, identity, kind: "joined" };
    if (event.event === "participant_left" || event.event === "participant_connection_aborted") {
      const intentional = Number(event.participant?.disconnectReason) === CLIENT_INITIATED;
      return { room, identity, kind: intentional ? "left_intentionally" : "left_aborted" };
    }
    return undefined;
  }

  #apiHost(): string {
    return new URL(this.lk.url.replace(/^ws/, "http")).host;
  }
}

function describe(err: unknown, { TwirpError }: Sdk): string {
  if (err instanceof TwirpError) return `the SFU answered ${err.status}${err.code ? ` ${err.code}` : ""}: ${err.message}`;
  const cause = (err as { cause?: { code?: string } }).cause?.code;
  if (cause) return `it is unreachable (${cause})`;
  if (err instanceof Error && err.name === "TimeoutError") return `no answer within ${API_TIMEOUT_S} s`;
  return err instanceof Error ? err.message : String(err);
}

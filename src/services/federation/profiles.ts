/**
 * Profiles across servers: answering `/_matrix/federation/v1/query/profile` for our users, and
 * asking other servers for theirs (what `GET /_matrix/client/v3/profile/{userId}` needs for a
 * remote user). A remote failure passes on the remote error when it is a Matrix one, else 502.
 */
import { Errors, MatrixError } from "../../errors.js";
import { isValidUserId, serverNameOf } from "../../events/ids.js";
import type { AccountStore } from "../../storage/interfaces.js";
import { FederationError, type FederationClient } from "./client.js";

const FIELDS = new Set(["displayname", "avatar_url"]);

export type ProfileFields = { displayname?: string; avatar_url?: string };

export class ProfileQueries {
  constructor(
    private readonly serverName: string,
    private readonly accounts: AccountStore,
    private readonly client: FederationClient,
  ) {}

  async serve(userId: string, field: string | undefined): Promise<ProfileFields> {
    if (!isValidUserId(userId)) throw Errors.invalidParam("`user_id` is not a user ID");
    if (serverNameOf(userId) !== this.serverName) throw Errors.invalidParam("The user is not hosted on this homeserver");
    if (field !== undefined && !FIELDS.has(field)) throw Errors.invalidParam("`field` must be displayname or avatar_url");
    const profile = await this.accounts.getProfile(userId);
    if (!profile) throw Errors.notFound("The user does not exist");
    const out: ProfileFields = {};
    if (profile.displayname !== null && (field === undefined || field === "displayname")) out.displayname = profile.displayname;
    if (profile.avatar_url !== null && (field === undefined || field === "avatar_url")) out.avatar_url = profile.avatar_url;
    return out;
  }

  /** A remote user's profile, from their server. */
  async fetch(userId: string): Promise<ProfileFields> {
    const server = serverNameOf(userId);
    if (!isValidUserId(userId) || server === undefined) throw Errors.invalidParam("Not a user ID");
    let res;
    try {
      res = await this.client.request(server, { method: "GET", path: "/_matrix/federation/v1/query/profile", query: { user_id: userId }, maxBytes: 64 * 1024 });
    } catch (err) {
      if (err instanceof FederationError) throw new MatrixError(502, "M_UNKNOWN", `Failed to fetch the profile from ${server}`);
      throw err;
    }
    if (res.status !== 200) {
      if (res.status === 404) throw Errors.notFound("Profile was not found");
      if (res.status >= 400 && res.status < 500 && typeof res.json.errcode === "string") {
        throw new MatrixError(res.status, res.json.errcode, typeof res.json.error === "string" ? res.json.error : "The remote server refused");
      }
      throw new MatrixError(502, "M_UNKNOWN", `Failed to fetch the profile from ${server}`);
    }
    const out: ProfileFields = {};
    if (typeof res.json.displayname === "string") out.displayname = res.json.displayname;
    if (typeof res.json.avatar_url === "string") out.avatar_url = res.json.avatar_url;
    return out;
  }
}

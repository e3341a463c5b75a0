/** Stored filters (`POST`/`GET /user/{userId}/filter`) and the `filter` parameter of `/sync`. */
import { Errors } from "../../errors.js";
import { MAX_JSON_NESTING, nestsDeeperThan } from "../../json_nesting.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { parseFilter, type Filter } from "./filters.js";

export class FilterService {
  constructor(private readonly storage: Storage) {}

  async create(requester: Requester, userId: string, body: unknown): Promise<string> {
    if (requester.userId !== userId) throw Errors.forbidden("Cannot create filters for other users");
    if (body === undefined) throw Errors.notJson();
    const filter = parseFilter(body);
    return this.storage.filters.create(userId, JSON.stringify(filter));
  }

  async get(requester: Requester, userId: string, filterId: string): Promise<Filter> {
    if (requester.userId !== userId) throw Errors.forbidden("Cannot get filters for other users");
    const json = await this.storage.filters.get(userId, filterId);
    if (json === undefined) throw Errors.notFound("No such filter");
    return JSON.parse(json) as Filter;
  }

  /**
   * The `filter` query parameter of `/sync`: a filter ID of the user's, or a
   * filter definition given inline as JSON (anything starting with `{`).
   */
  async forSync(userId: string, param: string | undefined): Promise<Filter> {
    if (param === undefined || param === "") return {};
    if (param.trimStart().startsWith("{")) {
      if (nestsDeeperThan(param, MAX_JSON_NESTING)) throw Errors.badJson(`The filter may nest at most ${MAX_JSON_NESTING} levels deep`);
      let parsed: unknown;
      try {
        parsed = JSON.parse(param);
      } catch {
        throw Errors.notJson("The filter parameter is not valid JSON");
      }
      return parseFilter(parsed);
    }
    const json = await this.storage.filters.get(userId, param);
    if (json === undefined) throw Errors.notFound(`No filter ${param} for this user`);
    return JSON.parse(json) as Filter;
  }
}

import type { FastifyRequest } from "fastify";

/** For endpoints whose JSON body may be left out entirely (join, leave, …): treat it as `{}`. */
export async function optionalBody(request: FastifyRequest): Promise<void> {
  if (request.body === undefined) request.body = {};
}

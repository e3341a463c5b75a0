import { Type } from "../../json_schema.js";

export const workerFields = {
  worker_processes: Type.Union([Type.Integer({ minimum: 1, maximum: 64 }), Type.Literal("auto")], {
    default: 1,
    description:
      "How many processes serve this homeserver, sharing its listeners; `auto` is one per CPU core. More than one needs PostgreSQL. Each process answers every endpoint. Processes started separately with `--worker-id` join the same way. See docs/workers.md.",
    allowed: "an integer from 1 to 64, or auto",
  }),
};

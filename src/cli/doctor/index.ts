/** `switchboard doctor`: reads the options' files, runs the checks, prints, and says the exit status. */
import { readFileSync } from "node:fs";
import { loadConfigFile } from "../../config/load.js";
import { RtcService } from "../../services/rtc.js";
import { UsageError, type DoctorCommand } from "../args.js";
import type { DoctorOptions, Transport } from "./context.js";
import { formatJson, formatTable, progressLine } from "./format.js";
import { runDoctor, type Configured } from "./runner.js";

/** 0 when nothing failed (warnings allowed), 1 when a check failed. */
export async function doctor(cmd: DoctorCommand): Promise<number> {
  let ca: string | undefined;
  if (cmd.caFile) {
    try {
      ca = readFileSync(cmd.caFile, "utf8");
    } catch (err) {
      throw new UsageError(`--ca-file ${cmd.caFile}: ${(err as Error).message}`);
    }
    if (!ca.includes("-----BEGIN CERTIFICATE-----")) throw new UsageError(`--ca-file ${cmd.caFile} holds no PEM certificate`);
  }
  let configured: Configured | undefined;
  if (cmd.config) {
    const { config } = loadConfigFile(cmd.config);
    const transports = config.features.msc4143 ? (new RtcService(config).transports() as Transport[]) : [];
    configured = { file: cmd.config, transports };
  }
  const opts: DoctorOptions = {
    server: cmd.server,
    user: cmd.user,
    password: cmd.password,
    accessToken: cmd.accessToken,
    insecureHttp: cmd.insecureHttp,
    ca,
  };
  const report = await runDoctor(opts, configured, cmd.json ? undefined : progressLine(process.stderr));
  console.log(cmd.json ? formatJson(report) : formatTable(report, process.stdout.isTTY === true));
  return report.summary.fail > 0 ? 1 : 0;
}

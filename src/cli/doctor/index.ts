/** `switchboard doctor`: reads the options' files, runs the checks, prints, and says the exit status. */
import { readFileSync } from "node:fs";
import { loadConfigFile } from "../../config/load.js";
import { RtcService } from "../../services/rtc.js";
import { UsageError, type DoctorCommand } from "../args.js";
import type { DoctorOptions, Transport } from "./context.js";
import { formatJson, formatTable, progressLine } from "./format.js";
import { runDoctor, type Configured } from "./runner.js";

/** 0 when nothing failed (warnings allowed), 1 when a check failed, 130/143 after Ctrl-C/SIGTERM. */
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
  // Ctrl-C or SIGTERM: stop the checks but still clean up (room, device, delayed event); a second one quits at once.
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(SIGNAL_EXIT[signal] ?? 1);
    const tidy = cmd.user ? " and cleaning up (its delayed events, the throwaway room, its device)" : cmd.accessToken ? " and cleaning up (its delayed events, the throwaway room)" : "";
    process.stderr.write(`\nswitchboard doctor: ${signal}: stopping${tidy}; again to quit at once\n`);
    controller.abort(signal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let report;
  try {
    report = await runDoctor({ ...opts, signal: controller.signal }, configured, cmd.json ? undefined : progressLine(process.stderr));
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  console.log(cmd.json ? formatJson(report) : formatTable(report, process.stdout.isTTY === true));
  // Also when the signal came during the clean-up, which then finished.
  if (controller.signal.aborted) return SIGNAL_EXIT[String(controller.signal.reason)] ?? 1;
  return report.summary.fail > 0 ? 1 : 0;
}

/** 128 + the signal's number, as shells report a command a signal stopped. */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

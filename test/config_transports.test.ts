/** `matrix_rtc.transports` is validated when the config loads (reference §1). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "../src/config/load.js";
import { refusedProblems } from "./helpers/config.js";

const withTransports = (transports: string) => `server_name: example.org\nmatrix_rtc:\n  transports:\n${transports}`;
const load = (transports: string) => parseConfig(withTransports(transports));

/** The problems a refused config file is reported with, a line each. */
const refused = (yaml: string) => refusedProblems(yaml).join("\n");

const problems = (transports: string) => refused(withTransports(transports));

describe("matrix_rtc.transports validation", () => {
  test("each problem gives its line in the file, in line order", () => {
    const yaml = [
      "server_name: example.org", // 1
      "matrix_rtc:", // 2
      "  transports:", // 3
      "    - type: livekit", // 4
      "      livekit_service_url: /relative", // 5
      "    - type: livekit", // 6
      "      livekit_service_url: https://jwt.example.org", // 7
      "      colour: blue", // 8
      "    - type: livekit", // 9
      "    - type: custom", // 10
      "      settings:", // 11
      "        api_key: abc", // 12
      "extra_well_known_client_content:", // 13
      '  "org.matrix.msc4143.rtc_foci":', // 14
      "    - type: livekit", // 15
      "      livekit_service_url: http://jwt.example.org", // 16
      "",
    ].join("\n");
    const lines = refused(yaml).split("\n");
    assert.equal(lines.length, 5, lines.join("\n"));
    assert.match(lines[0]!, /^line 5: `matrix_rtc\.transports\[0\]\.livekit_service_url` is "\/relative"/);
    assert.match(lines[1]!, /^line 8: unknown key `matrix_rtc\.transports\[1\]\.colour`/);
    // A missing key is reported at its entry.
    assert.match(lines[2]!, /^line 9: `matrix_rtc\.transports\[2\]\.livekit_service_url` is missing/);
    assert.match(lines[3]!, /^line 12: `matrix_rtc\.transports\[3\]\.settings\.api_key` looks like a secret/);
    assert.match(lines[4]!, /^line 16: `extra_well_known_client_content\["org\.matrix\.msc4143\.rtc_foci"\]\[0\]\.livekit_service_url` is "http:/);
  });

  test("a livekit_service_url that is not a string is refused; another type's is served as written", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: 5\n"),
      /`matrix_rtc\.transports\[0\]\.livekit_service_url` is 5, which is not allowed: expected an absolute https:\/\/ URL/,
    );
    const { config } = load("    - type: custom\n      livekit_service_url: 5\n");
    assert.deepEqual(config.matrixRtc.transports, [{ type: "custom", livekit_service_url: 5 }]);
  });

  test("a URL whose query or fragment names a secret-looking parameter is refused", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: https://jwt.example.org/?access_token=abc\n"),
      /`matrix_rtc\.transports\[0\]\.livekit_service_url` is a URL whose parameter `access_token` looks like a secret/,
    );
    assert.match(
      problems("    - type: custom\n      url: https://sfu.example.org/?API_KEY=abc\n"),
      /`matrix_rtc\.transports\[0\]\.url` is a URL whose parameter `API_KEY` looks like a secret/,
    );
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: https://jwt.example.org/#token=abc\n"),
      /`matrix_rtc\.transports\[0\]\.livekit_service_url` is a URL whose parameter `token` looks like a secret/,
    );
    // Other query parameters are fine.
    const { config } = load("    - type: livekit\n      livekit_service_url: https://jwt.example.org/?region=eu\n");
    assert.equal(config.matrixRtc.transports[0]!.livekit_service_url, "https://jwt.example.org/?region=eu");
  });

  test("a livekit entry with an https URL is accepted and served as configured", () => {
    const { config, warnings } = load("    - type: livekit\n      livekit_service_url: https://jwt.example.org/livekit\n");
    assert.deepEqual(config.matrixRtc.transports, [{ type: "livekit", livekit_service_url: "https://jwt.example.org/livekit" }]);
    assert.deepEqual(warnings, []);
  });

  test("the MSC4519 name msc4195.livekit is accepted too", () => {
    const { config } = load("    - type: msc4195.livekit\n      livekit_service_url: https://jwt.example.org\n");
    assert.equal(config.matrixRtc.transports[0]!.type, "msc4195.livekit");
  });

  test("an entry with neither url nor livekit_service_url is refused, naming both keys", () => {
    assert.match(problems("    - type: livekit\n"), /matrix_rtc\.transports\[0\]\.livekit_service_url` is missing, and so is `matrix_rtc\.transports\[0\]\.url`/);
  });

  test("a relative URL is refused", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: /livekit/jwt\n"),
      /matrix_rtc\.transports\[0\]\.livekit_service_url` is "\/livekit\/jwt", which is not allowed: expected an absolute https:\/\/ URL/,
    );
  });

  test("plain http is refused for a public host", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: http://jwt.example.org\n"),
      /http:\/\/ only for loopback hosts/,
    );
  });

  test("plain http is allowed for loopback, with a warning", () => {
    const { config, warnings } = load("    - type: livekit\n      livekit_service_url: http://127.0.0.1:8080\n");
    assert.equal(config.matrixRtc.transports.length, 1);
    assert.match(warnings.join("\n"), /plain http/);
  });

  test("a URL with a user name or password is refused, in any entry and at any depth", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: https://jwt:hunter2@a.example/livekit\n"),
      /`matrix_rtc\.transports\[0\]\.livekit_service_url` is a URL with a user name or password; transports are served to every user/,
    );
    assert.match(
      problems("    - type: custom\n      nested:\n        - https://user@b.example/x\n"),
      /`matrix_rtc\.transports\[0\]\.nested\[0\]` is a URL with a user name or password/,
    );
  });

  test("a refused URL is quoted without its password", () => {
    const message = problems("    - type: livekit\n      livekit_service_url: http://jwt:hunter2@a.example/livekit\n");
    assert.match(message, /is "http:\/\/a\.example\/livekit", which is not allowed/);
    assert.ok(!message.includes("hunter2"), message);
  });

  test("plain http on a name that only starts like a loopback address is refused", () => {
    for (const host of ["127.example.com", "127.0.0.1.nip.io"]) {
      assert.match(problems(`    - type: livekit\n      livekit_service_url: http://${host}/livekit\n`), /http:\/\/ only for loopback hosts/);
    }
  });

  test("a key that looks like a secret is refused, at any depth and in any case", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: https://a.example\n      LiveKit_API_Secret: hunter2\n"),
      /`matrix_rtc\.transports\[0\]\.LiveKit_API_Secret` looks like a secret/,
    );
    assert.match(
      problems("    - type: custom\n      nested:\n        deep:\n          Token: abc\n"),
      /`matrix_rtc\.transports\[0\]\.nested\.deep\.Token` looks like a secret/,
    );
    assert.match(problems("    - type: custom\n      password: x\n"), /looks like a secret/);
    assert.match(problems("    - type: custom\n      api_key: x\n"), /looks like a secret/);
  });

  test("an unknown key on a livekit entry is refused, listing the allowed ones", () => {
    assert.match(
      problems("    - type: livekit\n      livekit_service_url: https://a.example\n      livekit_alias: x\n"),
      /unknown key `matrix_rtc\.transports\[0\]\.livekit_alias`; a livekit transport allows: type, url, livekit_service_url/,
    );
  });

  test("a Synapse 1.163 transport with only the SFU's url is accepted and served as written", () => {
    const { config, warnings } = load("    - type: livekit\n      url: wss://sfu.example.org\n");
    assert.deepEqual(config.matrixRtc.transports, [{ type: "livekit", url: "wss://sfu.example.org" }]);
    assert.deepEqual(warnings, []);
  });

  test("url and livekit_service_url together are both kept", () => {
    const { config } = load("    - type: livekit\n      url: wss://sfu.example.org:7880/\n      livekit_service_url: https://jwt.example.org\n");
    assert.deepEqual(config.matrixRtc.transports, [{ type: "livekit", url: "wss://sfu.example.org:7880/", livekit_service_url: "https://jwt.example.org" }]);
  });

  test("a url that is not wss:// is refused; ws:// only for loopback, with a warning", () => {
    assert.match(problems("    - type: livekit\n      url: ws://sfu.example.org\n"), /`matrix_rtc\.transports\[0\]\.url` is "ws:\/\/sfu\.example\.org", which is not allowed: expected a wss:\/\/ URL \(ws:\/\/ only for loopback hosts\)/);
    assert.match(problems("    - type: livekit\n      url: https://sfu.example.org\n"), /expected a wss:\/\/ URL/);
    assert.match(problems("    - type: livekit\n      url: /sfu\n"), /`matrix_rtc\.transports\[0\]\.url` is "\/sfu", which is not allowed: expected an absolute wss:\/\/ URL/);
    assert.match(problems("    - type: livekit\n      url: 7880\n"), /`matrix_rtc\.transports\[0\]\.url` is 7880, which is not allowed/);
    assert.match(problems("    - type: livekit\n      url: ws://127.example.com\n"), /ws:\/\/ only for loopback hosts/);
    const { config, warnings } = load("    - type: livekit\n      url: ws://127.0.0.1:7880\n");
    assert.deepEqual(config.matrixRtc.transports, [{ type: "livekit", url: "ws://127.0.0.1:7880" }]);
    assert.match(warnings.join("\n"), /matrix_rtc\.transports\[0\]\.url uses plain ws/);
  });

  test("a url meets the same secret checks", () => {
    assert.match(problems("    - type: livekit\n      url: wss://u:hunter2@sfu.example.org\n"), /`matrix_rtc\.transports\[0\]\.url` is a URL with a user name or password/);
    assert.match(problems("    - type: livekit\n      url: wss://sfu.example.org/?access_token=x\n"), /`matrix_rtc\.transports\[0\]\.url` is a URL whose parameter `access_token` looks like a secret/);
    const message = problems("    - type: livekit\n      url: ws://u:hunter2@sfu.example.org\n");
    assert.ok(!message.includes("hunter2"), message);
  });

  test("an unknown type is served verbatim, with a warning", () => {
    const { config, warnings } = load("    - type: focusA\n      required_field: theField\n");
    assert.deepEqual(config.matrixRtc.transports, [{ type: "focusA", required_field: "theField" }]);
    assert.match(warnings.join("\n"), /type "focusA", which Switchboard does not know; it is served to clients as written/);
  });

  test("an entry without a type is refused with its line", () => {
    assert.match(problems("    - livekit_service_url: https://a.example\n"), /line 4: missing required key `matrix_rtc\.transports\[0\]\.type`/);
  });
});

describe("a hand-written rtc_foci in extra_well_known_client_content", () => {
  const withExtra = (foci: string) =>
    `server_name: example.org\nextra_well_known_client_content:\n  org.matrix.msc4143.rtc_foci:\n${foci}`;

  test("meets the transports' rules, and the validated copy is what is kept", () => {
    const { config, warnings } = parseConfig(
      withExtra("    - type: livekit\n      livekit_service_url: https://jwt.example.org\n    - type: custom\n      x: 1\n"),
    );
    assert.deepEqual(config.extraWellKnownClientContent["org.matrix.msc4143.rtc_foci"], [
      { type: "livekit", livekit_service_url: "https://jwt.example.org" },
      { type: "custom", x: 1 },
    ]);
    assert.match(warnings.join("\n"), /extra_well_known_client_content\["org\.matrix\.msc4143\.rtc_foci"\]\[1\] has type "custom"/);
  });

  test("a secret, a URL with credentials, a relative URL or a missing type refuses the config", () => {
    assert.match(
      refused(withExtra("    - type: livekit\n      livekit_service_url: https://jwt.example.org\n      api_secret: x\n")),
      /`extra_well_known_client_content\["org\.matrix\.msc4143\.rtc_foci"\]\[0\]\.api_secret` looks like a secret/,
    );
    assert.match(
      refused(withExtra("    - type: livekit\n      livekit_service_url: https://u:p@jwt.example.org\n")),
      /is a URL with a user name or password/,
    );
    assert.match(refused(withExtra("    - type: livekit\n      livekit_service_url: /jwt\n")), /expected an absolute https:\/\/ URL/);
    assert.match(refused(withExtra("    - livekit_service_url: https://jwt.example.org\n")), /\[0\]\.type` is missing/);
    assert.match(refused(`server_name: example.org\nextra_well_known_client_content:\n  org.matrix.msc4143.rtc_foci: yes\n`), /must be a list of transports/);
  });
});

/** Client-Server paths are served under v3 and, for older clients, r0. */
export function clientPaths(suffix: string): string[] {
  return [`/_matrix/client/v3${suffix}`, `/_matrix/client/r0${suffix}`];
}

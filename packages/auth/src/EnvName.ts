/**
 * Names of environment variables as messages show them. Flags and settings take the NAME of the variable
 * holding a secret; one who types the secret itself there must not see it echoed into a terminal, a CI log or
 * a support ticket.
 */

/** A plausible environment variable name (POSIX: letters, digits and `_`, not starting with a digit). */
export const isEnvName = (s: string): boolean => /^[A-Za-z_][A-Za-z0-9_]{0,254}$/.test(s)

/** `$NAME` for a name; for anything else (a secret typed in its place?) a description that does not show it. */
export const shown = (s: string): string =>
  isEnvName(s) ? `$${s}` : "a value that is not a variable name (not shown: the secret itself?)"

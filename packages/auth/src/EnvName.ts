/**
 * Names of environment variables as messages show them. Flags and settings take the NAME of the variable
 * holding a secret; one who types the secret itself there must not see it echoed into a terminal, a CI log or
 * a support ticket.
 */

/**
 * A conventional environment variable name: upper case letters, digits and `_` (many generated secrets are
 * letters and digits only, so POSIX's looser rule would let one through and show it).
 */
export const isEnvName = (s: string): boolean => /^[A-Z_][A-Z0-9_]{0,127}$/.test(s)

/** `$NAME` for a name; for anything else (a secret typed in its place?) a description that does not show it. */
export const shown = (s: string): string =>
  isEnvName(s) ? `$${s}` : "a value that is not a variable name (not shown: the secret itself?)"

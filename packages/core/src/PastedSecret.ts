/**
 * A secret given where a file path goes. A flag that takes the path of a private key or a token file may be
 * given the key or the token itself, pasted by mistake: an error that repeated the "path" would put that
 * secret into a terminal, a CI log or a `--json` summary. Messages say what was wrong without showing it.
 */

/**
 * True when `value` cannot be a file path and looks like a secret: several lines, a PEM block, a JSON
 * object (a JWK: `{` and a quoted name), a JWT (`eyJ…`), or a name longer than any file system allows (255 bytes).
 */
export const isPastedSecret = (value: string): boolean =>
  /[\r\n]/.test(value) ||
  value.includes("-----BEGIN") ||
  /^\s*\{[\s\S]*"/.test(value) ||
  /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value) ||
  value.split(/[\\/]/).some((part) => Buffer.byteLength(part) > 255)

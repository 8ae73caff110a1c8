/**
 * A secret given where a file path goes. A flag that takes the path of a private key or a token file may be
 * given the key or the token itself, pasted by mistake: an error that repeated the "path" would put that
 * secret into a terminal, a CI log or a `--json` summary. Messages say what was wrong without showing it.
 */

/**
 * True when `value` cannot be a file path and looks like a secret: several lines, a PEM block, a JSON
 * object (a JWK: `{` and a quoted name; also as the last part of a path), a JWT or JWE (`eyJ…`), a `Bearer …` header, or a name longer than any file system allows (255 bytes).
 */
export const isPastedSecret = (value: string): boolean =>
  /[\r\n]/.test(value) ||
  value.includes("-----BEGIN") ||
  /^\s*Bearer\s/i.test(value) ||
  // each part: a config file's relative "path" is resolved against its folder before it is read
  value
    .split(/[\\/]/)
    .some(
      (part) =>
        /^\s*\{[\s\S]*"/.test(part) ||
        /^eyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*){2,4}$/.test(part) ||
        Buffer.byteLength(part) > 255,
    )

/**
 * True when a file path that names no file may be an opaque token pasted in its place (`ya29.…`, hex, base64):
 * one long part, no folder. A message then says how long it is instead of showing it.
 */
export const mayBeToken = (value: string): boolean => !/[\\/]/.test(value) && value.length >= 40

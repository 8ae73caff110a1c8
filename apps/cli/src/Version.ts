declare const FERRY_VERSION: string | undefined

/** The CLI's version, injected by the bundler; "dev" when running from sources. */
export const version: string = typeof FERRY_VERSION === "string" ? FERRY_VERSION : "dev"

declare const FERRY_VERSION: string | undefined

/** Ferry's version (the CLI's and the sandbox's), injected by the bundler; "dev" when running from sources. */
export const version: string = typeof FERRY_VERSION === "string" ? FERRY_VERSION : "dev"

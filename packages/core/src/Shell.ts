/** A word of a command line Ferry prints for the user to run: kept as is when plain, else single-quoted. */
export const shellWord = (word: string): string =>
  /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`

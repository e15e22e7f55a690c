// Errors the CLI reports as one line with exit status 2: bad input, never a crash.
export class UsageError extends Error {}

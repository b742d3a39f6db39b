/**
 * The OpenPGP algorithm ids (RFC 4880 §9) that the native encryption writes or reads: the same numbers as
 * openpgp.js's `enums` (a test holds them equal). They live here so that what a worker thread loads to write
 * key packets (native.ts and its imports) does not load openpgp.js, ~13 MB of memory per thread.
 */
export const SYMMETRIC = { aes128: 7, aes192: 8, aes256: 9 } as const;
export const PUBLIC_KEY = { rsaEncryptSign: 1, rsaEncrypt: 2, ecdh: 18 } as const;
export const HASH = { sha256: 8, sha384: 9, sha512: 10 } as const;

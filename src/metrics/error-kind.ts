/** The error label of lacre_errors_total is decided with the reply, by the error's class (src/filter/reply.ts). */
export { ERROR_KINDS, errorKind, type ErrorKind } from '../filter/reply.js';

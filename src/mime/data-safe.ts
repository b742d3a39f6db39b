/**
 * Buffers made of whole lines, each ending in CRLF, none starting with '.', with no other CR or LF. After a line
 * end such a buffer goes into SMTP DATA as it is: no dot to stuff, no line end to mend. Armor with CRLF line
 * ends is made so; marking it lets the relay skip examining every byte (src/smtp/dot-stuffing.ts), which for a
 * big message cost as much as its encryption.
 */
const dataSafe = new WeakSet<Uint8Array>();

export function markDataSafe<T extends Uint8Array>(buffer: T): T {
  dataSafe.add(buffer);
  return buffer;
}

export function isDataSafe(buffer: Uint8Array): boolean {
  return dataSafe.has(buffer);
}

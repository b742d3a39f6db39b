/** `head`'s non-empty buffers, then whatever `rest` still holds: what was read ahead of a stream, put back in front. */
export async function* prepend(head: readonly Buffer[], rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  for (const buffer of head) if (buffer.length > 0) yield buffer;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield next.value;
  }
}

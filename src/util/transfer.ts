/**
 * The ArrayBuffers of `views` that may go in a postMessage transfer list: those the view fills whole. A smaller
 * Buffer lives in a slice of Node's shared Buffer pool, which Node marks untransferable: Node 20 quietly copies
 * it, Node 21 and later throw DataCloneError. Anything left out is copied, as Node 20 would have.
 */
export function wholeArrayBuffers(views: readonly Uint8Array[]): ArrayBuffer[] {
  return views.flatMap((view) => (view.byteOffset === 0 && view.byteLength === view.buffer.byteLength ? [view.buffer as ArrayBuffer] : []));
}

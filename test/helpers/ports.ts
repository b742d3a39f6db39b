import net from 'node:net';

/** A port that was free on 127.0.0.1 a moment ago (bind to 0, read it, close): for a listener that is not up yet, or one that must answer nothing. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

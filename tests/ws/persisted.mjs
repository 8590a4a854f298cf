// Subscribes to the gateway's `sessionEvents` by persisted-query hash with
// graphql-ws, the graphql-transport-ws protocol's reference client, the way
// Apollo's persisted query link does over HTTP: the hash alone first; after
// PERSISTED_QUERY_NOT_FOUND, the document with its hash; then the hash
// alone again. Prints one line per step (`NOT_FOUND`, `REGISTERED <kind>`,
// `BY_HASH <kind>`) and exits 0 after the last; 1 on anything else, or
// after 30 s.
//
//   node tests/ws/persisted.mjs ws://127.0.0.1:8080/graphql
//
// Run by tests/it/gateway_apq.rs; `npm ci` in tests/ws installs it.
import { createHash } from 'node:crypto';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: persisted.mjs <ws url>');
  process.exit(2);
}

const query = 'subscription { sessionEvents(includeExisting: true) { kind } }';
const extensions = {
  persistedQuery: {
    version: 1,
    sha256Hash: createHash('sha256').update(query).digest('hex'),
  },
};

// graphql-ws's default, lazy: the socket closes when no subscription is
// active and opens again for the next, so each step after the first comes
// after a closing handshake the client starts.
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: 'Bearer demo-admin' },
  retryAttempts: 0,
});

setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 30_000).unref();

const fail = (why) => {
  console.error(why);
  process.exit(1);
};

// The first message of one subscription: its event's kind, or its errors'
// codes (an `error` message rejects with the list of GraphQL errors).
function first(payload) {
  return new Promise((resolve, reject) => {
    const unsubscribe = client.subscribe(payload, {
      next: (message) => {
        unsubscribe();
        resolve(message);
      },
      error: reject,
      complete: () => reject(new Error('completed without a message')),
    });
  });
}

const codes = (errors) =>
  (Array.isArray(errors) ? errors : [errors]).map((e) => e?.extensions?.code ?? String(e?.message ?? e));
const kind = (message) => {
  if (message.errors) fail(`errors: ${JSON.stringify(message.errors)}`);
  return message.data.sessionEvents.kind;
};

try {
  await first({ query: '', extensions });
  fail('the unknown hash ran');
} catch (errors) {
  const got = codes(errors);
  if (got.join() !== 'PERSISTED_QUERY_NOT_FOUND') fail(`hash alone, first: ${got}`);
  console.log('NOT_FOUND');
}
console.log(`REGISTERED ${kind(await first({ query, extensions }))}`);
console.log(`BY_HASH ${kind(await first({ query: '', extensions }))}`);
await client.dispose();
process.exit(0);

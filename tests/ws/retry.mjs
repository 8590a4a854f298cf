// Subscribes with graphql-ws, the graphql-transport-ws protocol's reference
// client, while its caller already holds every socket the gateway lets it
// hold: the gateway closes the client's socket with 1013 (try again
// later), which the client, by default, retries. Prints `CLOSED <code>
// <reason>` for each close, then `EVENT <kind>` for the subscription's
// first event once a place is free, and exits 0; 1 on an error or after
// 30 s.
//
//   node tests/ws/retry.mjs ws://127.0.0.1:8080/graphql
//
// Run by tests/it/gateway_live.rs; `npm ci` in tests/ws installs it.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: retry.mjs <ws url>');
  process.exit(2);
}

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: 'Bearer demo-admin' },
  // The default `shouldRetry` and close-code rules decide; only the wait
  // is shortened, so the test does not sleep through the back-off.
  retryAttempts: 100,
  retryWait: () => new Promise((resolve) => setTimeout(resolve, 100)),
  on: { closed: (event) => console.log(`CLOSED ${event.code} ${event.reason}`) },
});

setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 30_000).unref();

const unsubscribe = client.subscribe(
  { query: 'subscription { sessionEvents(includeExisting: true) { kind } }' },
  {
    next: (message) => {
      if (message.errors) {
        console.error(JSON.stringify(message.errors));
        process.exit(1);
      }
      console.log(`EVENT ${message.data.sessionEvents.kind}`);
      unsubscribe();
      client.dispose();
      process.exit(0);
    },
    error: (error) => {
      console.error('error', error?.code ?? '', error?.reason ?? JSON.stringify(error));
      process.exit(1);
    },
    complete: () => {
      console.error('completed without an event');
      process.exit(1);
    },
  },
);

// Subscribes to the gateway's `sessionEvents` with graphql-ws, the
// graphql-transport-ws protocol's reference client, and prints one line per
// event: `<KIND> <sessionId> <status>`. Exits 0 after the ENDED event of
// the session named on the command line, 1 on any error or after 30 s.
//
//   node tests/ws/subscribe.mjs ws://127.0.0.1:8080/graphql <sessionId>
//
// Run by tests/it/gateway_live.rs; `npm ci` in tests/ws installs it.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, until] = process.argv.slice(2);
if (!url || !until) {
  console.error('usage: subscribe.mjs <ws url> <sessionId to wait for ENDED>');
  process.exit(2);
}

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  // Browsers cannot set headers on a WebSocket: credentials travel here.
  connectionParams: { Authorization: 'Bearer demo-admin' },
  retryAttempts: 0,
});

const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 30_000);

client.subscribe(
  {
    query: `subscription {
      sessionEvents(includeExisting: true) { kind at session { id sessionId status } }
    }`,
  },
  {
    next: (message) => {
      if (message.errors) {
        console.log(`ERROR ${JSON.stringify(message.errors)}`);
        return;
      }
      const { kind, session } = message.data.sessionEvents;
      console.log(`${kind} ${session.sessionId} ${session.status}`);
      if (kind === 'ENDED' && session.sessionId === until) {
        clearTimeout(timer);
        client.dispose();
        process.exit(0);
      }
    },
    error: (error) => {
      console.error(`subscription error: ${error instanceof Error ? error.message : JSON.stringify(error)}`);
      process.exit(1);
    },
    complete: () => {
      console.error('completed before ENDED');
      process.exit(1);
    },
  },
);

// Starts GraphiQL on the page the gateway serves at GET /graphql.
//
// It runs as a file (the page's Content-Security-Policy allows no inline
// script) and reads its configuration from the page's non-executed
// <script type="application/json" id="graphiql-config"> block:
//   endpoint              the GraphQL endpoint, same origin ("/graphql")
//   subscriptionEndpoint  the WebSocket URL for subscriptions, or null
//   defaultHeaders        headers pre-filled in the headers editor ({} for none)
'use strict';

// The first query a new visitor sees.
var DEFAULT_QUERY = [
  '# Sessions of the last 30 days, newest first. Ctrl-Enter runs the query;',
  '# pass pageInfo.endCursor as `after` for the next page.',
  'query Recent($after: String) {',
  '  sessions(state: HISTORY, first: 5, after: $after) {',
  '    edges {',
  '      node { sessionId target owner status startDate endDate documentName }',
  '    }',
  '    pageInfo { hasNextPage endCursor }',
  '  }',
  '}',
  '',
].join('\n');

(function start() {
  var config = JSON.parse(document.getElementById('graphiql-config').textContent);
  var headers = config.defaultHeaders || {};
  var hasHeaders = Object.keys(headers).length > 0;

  // A path ("/graphql") is this page's own origin, over ws:// or wss://.
  var subscriptionUrl = config.subscriptionEndpoint || undefined;
  if (subscriptionUrl && subscriptionUrl.charAt(0) === '/') {
    subscriptionUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') +
      location.host + subscriptionUrl;
  }
  var send = GraphiQL.createFetcher({
    url: config.endpoint,
    subscriptionUrl: subscriptionUrl,
  });
  // GraphiQL introspects once before its headers editor exists, so that
  // first request would carry no headers (a gateway that authenticates
  // callers would refuse it, and the docs stay empty): it gets the
  // pre-filled ones. Every other request sends what the editor holds.
  function fetcher(params, options) {
    if (hasHeaders && params && params.operationName === 'IntrospectionQuery' &&
        !(options && options.headers)) {
      options = Object.assign({}, options, { headers: headers });
    }
    return send(params, options);
  }

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      isHeadersEditorEnabled: true,
      defaultHeaders: hasHeaders ? JSON.stringify(headers, null, 2) : undefined,
      // Open the headers tab when it holds something the user should see.
      defaultEditorToolsVisibility: hasHeaders ? 'headers' : false,
      // Headers may hold credentials: keep them out of localStorage.
      shouldPersistHeaders: false,
    }),
  );
})();

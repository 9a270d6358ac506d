// clipo-gql's GraphiQL page: queries over HTTP and subscriptions over the websocket, both at
// this page's own URL (/graphql); the header editor's headers go with both.
"use strict";

(function () {
  if (typeof GraphiQL === "undefined" || typeof React === "undefined" ||
      typeof ReactDOM === "undefined" || typeof GraphiQLPluginExplorer === "undefined") {
    document.getElementById("graphiql").hidden = true;
    document.getElementById("not-started").hidden = false;
    return;
  }

  const url = location.origin + location.pathname;
  const subscriptionUrl = url.replace(/^http/, "ws");
  const send = GraphiQL.createFetcher({ url, subscriptionUrl });

  // Header names are case-insensitive over HTTP but not as the websocket's connection_init
  // payload, where the server looks for `authorization`: send them lower-cased.
  function fetcher(params, options) {
    const headers = {};
    for (const [name, value] of Object.entries((options && options.headers) || {})) {
      headers[name.toLowerCase()] = value;
    }
    return send(params, Object.assign({}, options, { headers }));
  }

  const defaultQuery = `# clipo-gql. Ctrl-Enter runs the operation; Ctrl-Space completes.
#
# With AUTH_MODE=required, put {"Authorization": "Bearer <token>"} in Headers
# below: it goes with queries and with subscriptions (on the websocket).
# A subscription: subscription { videoStatus(id: "...") { status progress } }

{
  videos(first: 10) {
    totalCount
    edges {
      node {
        id
        filename
        status
      }
    }
  }
}
`;

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher,
      defaultQuery,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      // Not kept in localStorage: a bearer token there outlives the tab.
      shouldPersistHeaders: false,
      inputValueDeprecation: true,
    }),
  );
})();

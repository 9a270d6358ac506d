// The GraphQL over HTTP audit (graphql-http's auditServer) against a running server.
// Usage: node tests/audit/audit.mjs http://127.0.0.1:8000/graphql
// Prints one JSON array: [{id, name, status, reason?}], status "ok" | "notice" | "warn" | "error".
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs URL');
  process.exit(2);
}
const results = await auditServer({ url });
const summary = await Promise.all(
  results.map(async (result) => {
    if (result.status === 'ok') return { id: result.id, name: result.name, status: 'ok' };
    let body = '';
    try {
      body = await result.response.text();
    } catch {
      // the audit may have read the body already
    }
    return {
      id: result.id,
      name: result.name,
      status: result.status,
      reason: result.reason,
      httpStatus: result.response.status,
      contentType: result.response.headers.get('content-type'),
      body: body.slice(0, 500),
    };
  }),
);
console.log(JSON.stringify(summary, null, 2));

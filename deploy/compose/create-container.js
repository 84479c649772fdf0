// One-shot step of deploy/docker-compose.yml: creates the lake's blob
// container in Azurite (tally writes blobs but does not create containers).
// Runs with the node that the Azurite image already has; signs the request
// with the Shared Key scheme and Azurite's documented development account.
//
// Env: BLOB_ENDPOINT (http://azurite:10000/devstoreaccount1), ACCOUNT_NAME,
// ACCOUNT_KEY, CONTAINER. Exits 0 when the container exists afterwards.
'use strict';
const crypto = require('crypto');
const http = require('http');

const endpoint = new URL(process.env.BLOB_ENDPOINT || 'http://azurite:10000/devstoreaccount1');
const account = process.env.ACCOUNT_NAME || 'devstoreaccount1';
const key = process.env.ACCOUNT_KEY;
const container = process.env.CONTAINER || 'telemetry';
const version = '2021-08-06';

if (!key) {
  console.error('ACCOUNT_KEY is not set');
  process.exit(2);
}

function createContainer() {
  const path = `${endpoint.pathname.replace(/\/$/, '')}/${container}`;
  const date = new Date().toUTCString();
  // Verb, eleven standard headers (all empty here), the x-ms-* headers, then
  // the resource: /<account><path> and the query parameters.
  const stringToSign = [
    'PUT', '', '', '', '', '', '', '', '', '', '', '',
    `x-ms-date:${date}`,
    `x-ms-version:${version}`,
    `/${account}${path}\nrestype:container`,
  ].join('\n');
  const signature = crypto
    .createHmac('sha256', Buffer.from(key, 'base64'))
    .update(stringToSign, 'utf8')
    .digest('base64');
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        hostname: endpoint.hostname,
        port: endpoint.port || 80,
        path: `${path}?restype=container`,
        method: 'PUT',
        headers: {
          'x-ms-date': date,
          'x-ms-version': version,
          'Content-Length': 0,
          Authorization: `SharedKey ${account}:${signature}`,
        },
      },
      (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function main() {
  for (let attempt = 1; attempt <= 30; attempt++) {
    try {
      const { status, body } = await createContainer();
      if (status === 201) {
        console.log(`created container ${container}`);
        return 0;
      }
      if (status === 409) {
        console.log(`container ${container} exists`);
        return 0;
      }
      console.error(`creating container ${container}: HTTP ${status}: ${body}`);
      return 1;
    } catch (err) {
      console.error(`attempt ${attempt}: ${err.message}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  return 1;
}

main().then((code) => process.exit(code));

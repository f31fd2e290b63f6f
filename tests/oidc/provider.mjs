// A local OpenID provider for tailwarden's OIDC end-to-end test (npm oidc-provider).
//
//   usage: node provider.mjs <port> <redirect_uri>
//
// Listens on 127.0.0.1:<port> with issuer http://127.0.0.1:<port> (a loopback literal, so the test never resolves a
// name) and one confidential client, `tailwarden` / `tailwarden-test-secret`, allowed to redirect only to
// <redirect_uri>. Logins go through oidc-provider's development interactions: a plain HTML login form that takes
// any known account id (the password is not checked) and a consent form, both driven by the test with plain HTTP.
// The account id is the `sub` claim, deliberately unlike `preferred_username`. The accounts cover an allowed user
// and users refused by domain and by group.

import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [portText, redirectUri] = process.argv.slice(2);
const port = Number.parseInt(portText ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || !redirectUri) {
  console.error('usage: node provider.mjs <port> <redirect_uri>');
  process.exit(2);
}

const accounts = {
  'alice-0001': {
    email: 'alice@example.com',
    email_verified: true,
    preferred_username: 'alice',
    name: 'Alice Liddell',
    groups: ['vpn-users'],
  },
  'mallory-0002': {
    email: 'mallory@evil.example',
    email_verified: true,
    preferred_username: 'mallory',
    name: 'Mallory',
    groups: ['vpn-users'],
  },
  'bob-0003': {
    email: 'bob@example.com',
    email_verified: true,
    preferred_username: 'bob',
    name: 'Bob',
    groups: ['contractors'],
  },
};

// A fresh signing key per run: the test must fetch it through discovery, as a real deployment does.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const configuration = {
  clients: [
    {
      client_id: 'tailwarden',
      client_secret: 'tailwarden-test-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) {
      return undefined;
    }
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
  features: { devInteractions: { enabled: true } },
  // PKCE stays optional so the test can run tailwarden with and without it.
  pkce: { required: () => false },
  cookies: { keys: ['tailwarden-oidc-test-cookie-key'] },
  jwks: { keys: [signingKey] },
};

const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on http://127.0.0.1:${port}`));

// An external OpenID Connect issuer for the tests of `ferry-gateway serve`:
// oidc-provider on 127.0.0.1 with a free port, issuing ES256-signed JWT
// access tokens through the client credentials grant.
//
//   FERRY_AUDIENCE=http://gateway.test/fhir node server.mjs
//
// It prints one JSON line, {"issuer": "http://127.0.0.1:PORT"}, once it
// listens. Clients (client_secret_post):
//   ferry-user     / user-secret     scopes user/DocumentReference.crs
//   ferry-patient  / patient-secret  scopes patient/DocumentReference.crs,
//                                    tokens carry "patient": "pat-001"
// Every token carries "fhirUser" and the SMART scopes it was granted.
import http from 'node:http';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const audience = process.env.FERRY_AUDIENCE;
if (!audience) {
  console.error('FERRY_AUDIENCE must name the gateway audience, e.g. http://gateway.test/fhir');
  process.exit(2);
}

const smartScopes = 'user/DocumentReference.crs patient/DocumentReference.crs';
const clients = [
  {
    client_id: 'ferry-user',
    client_secret: 'user-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'user/DocumentReference.crs',
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'ES256',
  },
  {
    client_id: 'ferry-patient',
    client_secret: 'patient-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'patient/DocumentReference.crs',
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'ES256',
  },
];

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), alg: 'ES256', use: 'sig', kid: 'test-es256' };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [jwk] },
    scopes: ['openid', ...smartScopes.split(' ')],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: smartScopes,
          audience,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => ({
      fhirUser: `${issuer}/Practitioner/${token.clientId}`,
      ...(token.clientId === 'ferry-patient' ? { patient: 'pat-001' } : {}),
    }),
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));

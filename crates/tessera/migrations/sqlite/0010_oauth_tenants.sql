-- The tenant an authorization code was issued for (`tenant` at /oauth2/authorize, the hosted
-- tenant picker, or the user's default): the token family it starts is scoped to it.
ALTER TABLE oauth_codes ADD COLUMN tenant_id TEXT;

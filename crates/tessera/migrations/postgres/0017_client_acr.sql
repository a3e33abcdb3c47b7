-- The authentication class a client requires of every sign-in it gets a code from
-- (docs/oauth.md, "acr"); NULL: none beyond what the request asks.
ALTER TABLE oauth_clients ADD COLUMN require_acr TEXT;

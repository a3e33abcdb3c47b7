-- WebAuthn credentials (passkeys, security keys) as second factors and for passwordless
-- sign-in (docs/accounts.md, "Passkeys"). A `webauthn` factor's `secret` is the credential
-- (public key, counter, flags) as webauthn-rs serialises it, sealed like a TOTP secret.
ALTER TABLE mfa_factors DROP CONSTRAINT mfa_factors_kind_check;
ALTER TABLE mfa_factors ADD CONSTRAINT mfa_factors_kind_check
    CHECK (kind IN ('totp', 'webauthn'));
-- the WebAuthn credential id, base64url: one account per credential
ALTER TABLE mfa_factors ADD COLUMN credential_id TEXT;
CREATE UNIQUE INDEX mfa_factors_credential_id_idx ON mfa_factors (credential_id);

// Tessera's hosted pages: passkeys and security keys (WebAuthn). The only script of the hosted
// pages, served from /assets/passkey.js under a CSP that allows no other. Each form marked
// `data-webauthn` gets its button shown (the pages work without script too; the button is
// hidden until this runs) and, on click, runs the browser's ceremony, puts the answer (JSON) in
// the form's `credential` or `assertion` field and posts the form.
//   data-webauthn="create"   options in data-options: add a passkey
//   data-webauthn="get"      options in data-options: the second factor of a password sign-in
//   data-webauthn="discover" options from POST /auth/passkey/start: sign in without a password,
//                            also offered in the email field's autofill where the browser can
"use strict";

(() => {
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  const fromB64 = (s) => {
    const b = atob(s.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(s.length / 4) * 4, "="));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  };
  const toB64 = (buf) =>
    btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const withIds = (list) => (list || []).map((c) => ({ ...c, id: fromB64(c.id) }));

  const creationOptions = (o) => ({
    ...o,
    challenge: fromB64(o.challenge),
    user: { ...o.user, id: fromB64(o.user.id) },
    excludeCredentials: withIds(o.excludeCredentials),
  });
  const requestOptions = (o) => ({
    ...o,
    challenge: fromB64(o.challenge),
    allowCredentials: withIds(o.allowCredentials),
  });

  // PublicKeyCredential.toJSON() where the browser has it, else the same by hand.
  const asJson = (cred) => {
    if (typeof cred.toJSON === "function") return cred.toJSON();
    const r = cred.response;
    const response = { clientDataJSON: toB64(r.clientDataJSON) };
    if (r.attestationObject) response.attestationObject = toB64(r.attestationObject);
    if (r.authenticatorData) response.authenticatorData = toB64(r.authenticatorData);
    if (r.signature) response.signature = toB64(r.signature);
    if (r.userHandle) response.userHandle = toB64(r.userHandle);
    if (r.getTransports) response.transports = r.getTransports();
    return {
      id: cred.id,
      rawId: toB64(cred.rawId),
      type: cred.type,
      response,
      clientExtensionResults: cred.getClientExtensionResults(),
    };
  };

  const post = (form, field, cred, ceremony) => {
    form.elements[field].value = JSON.stringify(asJson(cred));
    if (ceremony) form.elements.ceremony.value = ceremony;
    form.submit();
  };

  const fail = (form, e) => {
    if (e && e.name === "AbortError") return;
    const out = form.querySelector("[data-webauthn-error]");
    if (out) {
      out.textContent = "The passkey did not work. Try again, or use another way.";
      out.hidden = false;
    }
  };

  const start = async () => {
    const res = await fetch("/auth/passkey/start", { method: "POST", credentials: "same-origin" });
    if (!res.ok) throw new Error(`passkey start: ${res.status}`);
    return res.json();
  };

  for (const form of document.querySelectorAll("form[data-webauthn]")) {
    const kind = form.dataset.webauthn;
    const button = form.querySelector("button");
    // The autofill request in flight, if any: a click aborts it and waits for it to end (a
    // browser runs one WebAuthn request at a time).
    let conditional = null;
    let pending = Promise.resolve();

    button.addEventListener("click", async () => {
      try {
        if (kind === "create") {
          const { publicKey } = JSON.parse(form.dataset.options);
          const cred = await navigator.credentials.create({ publicKey: creationOptions(publicKey) });
          post(form, "credential", cred);
        } else if (kind === "get") {
          const { publicKey } = JSON.parse(form.dataset.options);
          const cred = await navigator.credentials.get({ publicKey: requestOptions(publicKey) });
          post(form, "assertion", cred);
        } else {
          if (conditional) conditional.abort();
          await pending;
          const { ceremony, options } = await start();
          const cred = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
          post(form, "assertion", cred, ceremony);
        }
      } catch (e) {
        fail(form, e);
      }
    });
    button.hidden = false;

    // Conditional UI: the passkeys the browser holds for this site in the email field's autofill.
    if (kind === "discover" && PublicKeyCredential.isConditionalMediationAvailable) {
      conditional = new AbortController();
      const { signal } = conditional;
      pending = PublicKeyCredential.isConditionalMediationAvailable()
        .then(async (available) => {
          if (!available || signal.aborted) return;
          const { ceremony, options } = await start();
          if (signal.aborted) return;
          const cred = await navigator.credentials.get({
            publicKey: requestOptions(options.publicKey),
            mediation: "conditional",
            signal,
          });
          post(form, "assertion", cred, ceremony);
        })
        .catch((e) => {
          if (!signal.aborted) fail(form, e);
        });
    }
  }
})();

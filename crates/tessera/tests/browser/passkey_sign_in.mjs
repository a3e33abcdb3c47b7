// Enrols a passkey on Tessera's hosted pages and signs in with it, in Debian's Chromium with
// its virtual WebAuthn authenticator (DevTools protocol: a platform authenticator with resident
// keys and user verification): a password sign-in through an OAuth code flow, the passkeys
// page, "Add a passkey", then with the cookies gone (signed out) a second code flow where
// "Sign in with a passkey" replaces the password, and a third where the browser's autofill
// (conditional mediation) does. Prints one JSON line: the pages' titles, the
// page shown after adding, the three callback URLs, and the credentials the authenticator holds.
//
// (The third flow's sign-in page goes by on its own: its title is not recorded.)
//
// Run by the Rust test `browser::hosted_passkey_in_a_real_browser`, which sets:
// ISSUER, AUTHORIZE_URL, AUTHORIZE_URL_2, AUTHORIZE_URL_3, CALLBACK, EMAIL, PASSWORD.
import { env, launch, report, watchedPage } from "./chromium.mjs";

const browser = await launch();
const out = { titles: [], added: null, callbacks: [], credentials: [], console_errors: [] };
try {
  const page = await watchedPage(browser, out);
  const callback = env("CALLBACK");
  // The client's redirect URI is a page of Tessera's own (its health check), so the browser
  // really lands there, with the code in the address.
  const reached = async () => {
    await page.waitForURL(`${callback}**`);
    out.callbacks.push(page.url());
  };
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  // 1. Password sign-in, consent, back to the client.
  await page.goto(env("AUTHORIZE_URL"));
  out.titles.push(await page.title());
  await page.getByLabel(/email/i).fill(env("EMAIL"));
  await page.getByLabel(/password/i).fill(env("PASSWORD"));
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("button", { name: "Allow" }).click();
  await reached();

  // 2. The passkeys page of the signed-in browser: add one.
  await page.goto(`${env("ISSUER")}/oauth2/passkeys`);
  out.titles.push(await page.title());
  await page.getByRole("button", { name: "Add a passkey" }).click();
  await page.getByRole("heading", { name: "Passkey added" }).waitFor();
  out.added = await page.innerText("main");
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  out.credentials = credentials.map((c) => ({ resident: c.isResidentCredential, rp: c.rpId }));

  // 3. Signed out (the session cookie gone), a new code flow: the passkey button, no password.
  // This page is told the browser has no autofill for passkeys, so only the button can do it.
  await page.addInitScript(() => {
    if (location.search.includes("state=p2") && window.PublicKeyCredential) {
      PublicKeyCredential.isConditionalMediationAvailable = async () => false;
    }
  });
  await page.context().clearCookies();
  await page.goto(env("AUTHORIZE_URL_2"));
  out.titles.push(await page.title());
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await reached();

  // 4. Signed out again, a third flow where the browser offers autofill (conditional UI): the
  // virtual authenticator picks the passkey as a user would in the email field's list.
  await page.context().clearCookies();
  await page.goto(env("AUTHORIZE_URL_3"));
  await reached();
} catch (e) {
  await report(browser, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

// Walks a sign-in through another identity provider in Debian's Chromium: Tessera's sign-in
// page, its "Continue with …" button, the upstream's (a second Tessera's) sign-in and consent
// pages, back to Tessera's page that links the existing account with its password, Tessera's
// consent page, and back to the client. Prints one JSON line: the pages' titles and the
// callback URL the browser was sent to.
//
// Run by the Rust test `browser::federated_sign_in_in_a_real_browser`, which sets:
// AUTHORIZE_URL, CALLBACK, PROVIDER (the button's provider name), EMAIL, PASSWORD.
import { env, launch, report, watchedPage } from "./chromium.mjs";

const browser = await launch();
const out = { titles: [], callback: null, console_errors: [] };
try {
  const page = await watchedPage(browser, out);
  const callback = env("CALLBACK");

  await page.goto(env("AUTHORIZE_URL"));
  out.titles.push(await page.title());
  await page.getByRole("link", { name: `Continue with ${env("PROVIDER")}` }).click();

  // The upstream's own pages.
  await page.getByRole("button", { name: "Sign in", exact: true }).waitFor();
  out.titles.push(await page.title());
  await page.getByLabel(/email/i).fill(env("EMAIL"));
  await page.getByLabel(/password/i).fill(env("PASSWORD"));
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("button", { name: "Allow" }).click();

  // Back at Tessera: the account exists and nobody verified its address, so its password links it.
  await page.getByRole("heading", { name: "Link your account" }).waitFor();
  out.titles.push(await page.title());
  await page.getByLabel(/password/i).fill(env("PASSWORD"));
  await page.getByRole("button", { name: "Link and sign in" }).click();

  await page.getByRole("button", { name: "Allow" }).waitFor();
  out.titles.push(await page.title());
  await page.route(`${callback}**`, (route) => {
    out.callback = route.request().url();
    return route.fulfill({ status: 200, contentType: "text/html", body: "<title>back</title>ok" });
  });
  await page.getByRole("button", { name: "Allow" }).click();
  await page.waitForURL(`${callback}**`);
} catch (e) {
  await report(browser, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

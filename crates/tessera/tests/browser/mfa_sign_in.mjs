// Walks Tessera's hosted sign-in for an account with an authenticator app in Debian's Chromium:
// the login form, the second-factor page (first a wrong code, then the right one), the consent
// page, and back to the client. Prints one JSON line: the pages' titles, the error the
// second-factor page showed, and the callback URL the browser was sent to.
//
// Run by the Rust test `browser::hosted_second_factor_in_a_real_browser`, which sets:
// AUTHORIZE_URL, CALLBACK (the client's redirect URI), EMAIL, PASSWORD, WRONG_CODE, CODE.
import { env, launch, report, watchedPage } from "./chromium.mjs";

const browser = await launch();
const out = { titles: [], mfa_error: null, callback: null, console_errors: [] };
try {
  const page = await watchedPage(browser, out);
  const callback = env("CALLBACK");

  await page.goto(env("AUTHORIZE_URL"));
  out.titles.push(await page.title());
  await page.getByLabel(/email/i).fill(env("EMAIL"));
  await page.getByLabel(/password/i).fill(env("PASSWORD"));
  await page.getByRole("button", { name: "Sign in" }).click();

  await page.getByRole("heading", { name: "Second factor" }).waitFor();
  out.titles.push(await page.title());
  await page.getByLabel(/code/i).fill(env("WRONG_CODE"));
  await page.getByRole("button", { name: "Continue" }).click();
  await page.getByRole("alert").waitFor();
  out.mfa_error = await page.getByRole("alert").innerText();
  await page.getByLabel(/code/i).fill(env("CODE"));
  await page.getByRole("button", { name: "Continue" }).click();

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

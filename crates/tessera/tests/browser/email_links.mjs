// Follows the links of Tessera's emails in Debian's Chromium: confirms an address on
// /verify-email, then sets a new password on /reset-password. Prints one JSON line with the
// heading each form answered with.
//
// Run by the Rust test `browser::email_link_pages_in_a_real_browser`, which sets VERIFY_URL,
// RESET_URL and NEW_PASSWORD.
import { env, launch, report, watchedPage } from "./chromium.mjs";

const browser = await launch();
const out = { verified: null, reset: null, console_errors: [] };
try {
  const page = await watchedPage(browser, out);

  await page.goto(env("VERIFY_URL"));
  await page.getByRole("button", { name: "Confirm my email address" }).click();
  await page.waitForLoadState();
  out.verified = await page.locator("h1").innerText();

  await page.goto(env("RESET_URL"));
  await page.getByLabel(/new password/i).fill(env("NEW_PASSWORD"));
  await page.getByRole("button", { name: "Set the new password" }).click();
  await page.waitForLoadState();
  out.reset = await page.locator("h1").innerText();
} catch (e) {
  await report(browser, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

// Follows the links of Tessera's emails in Debian's Chromium: confirms an address on
// /verify-email, then sets a new password on /reset-password. Prints one JSON line with the
// heading each form answered with.
//
// Run by the Rust test `browser::email_link_pages_in_a_real_browser`, which sets VERIFY_URL,
// RESET_URL and NEW_PASSWORD.
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // This network is closed: without these Chromium floods it with background connections.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const out = { verified: null, reset: null, console_errors: [] };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on("console", (m) => m.type() === "error" && out.console_errors.push(m.text()));
  page.on("response", (r) => r.status() >= 400 && out.console_errors.push(`${r.status()} ${r.url()}`));

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
  const [page] = browser.contexts().flatMap((c) => c.pages());
  if (page) console.error(`stopped at ${page.url()}:\n${await page.innerText("body").catch(() => "")}`);
  throw e;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

// Links an upstream identity to an existing account by an emailed link, in Debian's Chromium:
// Tessera's sign-in page, "Continue with …", the upstream's sign-in and consent pages, Tessera's
// linking page and its "Email a link" button; then the link from the mail folder, opened in the
// same browser, its "Link …" button, "Continue signing in", and back to the client. Prints one
// JSON line: the pages' titles and the callback URL the browser was sent to.
//
// Run by the Rust test `browser::federated_link_by_email_in_a_real_browser`, which sets:
// AUTHORIZE_URL, CALLBACK, PROVIDER (the button's provider name), EMAIL, PASSWORD (at the
// upstream), MAIL_DIR (where the downstream writes its .eml files).
import { readdirSync, readFileSync } from "node:fs";
import { env, launch, report, watchedPage } from "./chromium.mjs";

// The link-identity link of the first mail in `dir`, waiting up to 15 s for one.
const mailedLink = async (dir) => {
  for (let i = 0; i < 150; i++) {
    const files = (() => {
      try {
        return readdirSync(dir).filter((f) => f.endsWith(".eml"));
      } catch {
        return [];
      }
    })();
    if (files.length > 0) {
      const raw = readFileSync(`${dir}/${files[0]}`, "utf8")
        .replace(/=\r?\n/g, "")
        .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
      const found = raw.match(/https?:\/\/[^\s"<]*\/link-identity\?token=[A-Za-z0-9_-]+/);
      if (found) return found[0];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no link-identity mail in ${dir}`);
};

const browser = await launch();
const out = { titles: [], callback: null, console_errors: [] };
try {
  const page = await watchedPage(browser, out);
  const callback = env("CALLBACK");
  await page.route(`${callback}**`, (route) => {
    out.callback = route.request().url();
    return route.fulfill({ status: 200, contentType: "text/html", body: "<title>back</title>ok" });
  });

  await page.goto(env("AUTHORIZE_URL"));
  await page.getByRole("link", { name: `Continue with ${env("PROVIDER")}` }).click();
  await page.getByRole("button", { name: "Sign in", exact: true }).waitFor();
  await page.getByLabel(/email/i).fill(env("EMAIL"));
  await page.getByLabel(/password/i).fill(env("PASSWORD"));
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("button", { name: "Allow" }).click();

  // Tessera's linking page: the account has no password, so only the emailed link is offered.
  await page.getByRole("heading", { name: "Link your account" }).waitFor();
  out.titles.push(await page.title());
  await page.getByRole("button", { name: /^Email a link to/ }).click();
  await page.getByRole("heading", { name: "Check your email" }).waitFor();
  out.titles.push(await page.title());

  // The link, in the same browser: a page that asks, then confirms.
  await page.goto(await mailedLink(env("MAIL_DIR")));
  out.titles.push(await page.title());
  await page.getByRole("button", { name: `Link ${env("PROVIDER")}` }).click();
  await page.getByRole("heading", { name: "Linked" }).waitFor();
  out.titles.push(await page.title());
  await page.getByRole("link", { name: "Continue signing in" }).click();

  // The sign-in goes on (the upstream remembers the browser); Tessera's consent, then back.
  for (let i = 0; i < 3 && !out.callback; i++) {
    const allow = page.getByRole("button", { name: "Allow" });
    const next = await Promise.race([
      allow.waitFor().then(() => "allow", () => "none"),
      page.waitForURL(`${callback}**`).then(() => "back", () => "none"),
    ]);
    if (next === "allow") await allow.click();
  }
  await page.waitForURL(`${callback}**`);
} catch (e) {
  await report(browser, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

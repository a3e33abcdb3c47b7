// Walks Tessera's hosted sign-in in Debian's Chromium: the login form, the consent page and the
// tenant picker, then clicks the workspace named by PICK. Prints one JSON line: the pages' titles,
// the workspaces the picker listed and the callback URL the browser was sent to.
//
// Run by the Rust test `browser::hosted_tenant_picker_in_a_real_browser`, which sets:
// AUTHORIZE_URL, CALLBACK (the client's redirect URI), EMAIL, PASSWORD, PICK.
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

// `launch` starts Chromium with a fresh, empty profile of its own (a new --user-data-dir).
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
const out = { titles: [], tenants: [], callback: null, console_errors: [] };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on("console", (m) => m.type() === "error" && out.console_errors.push(m.text()));
  page.on("response", (r) => r.status() >= 400 && out.console_errors.push(`${r.status()} ${r.url()}`));
  const callback = env("CALLBACK");

  await page.goto(env("AUTHORIZE_URL"));
  out.titles.push(await page.title());
  await page.getByLabel(/email/i).fill(env("EMAIL"));
  await page.getByLabel(/password/i).fill(env("PASSWORD"));
  await page.getByRole("button", { name: "Sign in" }).click();

  await page.getByRole("button", { name: "Allow" }).waitFor();
  out.titles.push(await page.title());
  await page.getByRole("button", { name: "Allow" }).click();

  await page.getByRole("heading", { name: "Choose a workspace" }).waitFor();
  out.titles.push(await page.title());
  out.tenants = await page.locator("a.tenant").allInnerTexts();
  // The client's redirect URI is not served: answer it here and remember where we landed.
  await page.route(`${callback}**`, (route) => {
    out.callback = route.request().url();
    return route.fulfill({ status: 200, contentType: "text/html", body: "<title>back</title>ok" });
  });
  await page.getByRole("link", { name: env("PICK"), exact: true }).click();
  await page.waitForURL(`${callback}**`);
} catch (e) {
  // Say where the walk stopped: the page's address and text.
  const [page] = browser.contexts().flatMap((c) => c.pages());
  if (page) console.error(`stopped at ${page.url()}:\n${await page.innerText("body").catch(() => "")}`);
  throw e;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

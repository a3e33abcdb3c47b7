// Walks Tessera's hosted sign-in in Debian's Chromium: the login form, the consent page and the
// tenant picker, then clicks the workspace named by PICK. Prints one JSON line: the pages' titles,
// the workspaces the picker listed and the callback URL the browser was sent to.
//
// Run by the Rust test `browser::hosted_tenant_picker_in_a_real_browser`, which sets:
// AUTHORIZE_URL, CALLBACK (the client's redirect URI), EMAIL, PASSWORD, PICK.
import { env, launch, report, watchedPage } from "./chromium.mjs";

const browser = await launch();
const out = { titles: [], tenants: [], callback: null, console_errors: [] };
try {
  const page = await watchedPage(browser, out);
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
  await report(browser, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

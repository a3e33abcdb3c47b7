// Opens the API documentation UI (`/docs/`) in Debian's Chromium: the page must render the
// operations of `/openapi.json` under its CSP, and "Execute" (try-it-out is on) must call the API.
// Prints one JSON line: the title, the number of operations shown, the status the UI got from
// `GET /healthz`, and the console errors (a CSP refusal is one).
//
// Run by the Rust test `browser::documentation_ui_in_a_real_browser`, which sets BASE.
import { env, launch, report, watchedPage } from "./chromium.mjs";

const browser = await launch();
const out = { title: null, operations: 0, healthz: null, console_errors: [] };
try {
  const page = await watchedPage(browser, out);
  await page.goto(`${env("BASE")}/docs/`);
  await page.locator(".opblock").first().waitFor();
  out.title = await page.locator(".info .title").innerText();
  out.operations = await page.locator(".opblock").count();
  const healthz = page.locator("#operations-operations-get_healthz");
  await healthz.locator(".opblock-summary").click();
  await healthz.getByRole("button", { name: "Execute" }).click();
  const status = healthz.locator(".live-responses-table tr.response .response-col_status").first();
  await status.waitFor();
  out.healthz = (await status.innerText()).trim();
} catch (e) {
  await report(browser, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

// Debian's Chromium through playwright-core, as the browser tests start it.
import { chromium } from "playwright-core";

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

// `launch` starts Chromium with a fresh, empty profile of its own (a new --user-data-dir).
export const launch = () =>
  chromium.launch({
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

// A page that records console errors and 4xx/5xx responses in `out.console_errors`.
export const watchedPage = async (browser, out) => {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on("console", (m) => m.type() === "error" && out.console_errors.push(m.text()));
  page.on("response", (r) => r.status() >= 400 && out.console_errors.push(`${r.status()} ${r.url()}`));
  return page;
};

// Says where a walk stopped (the page's address and text), then rethrows.
export const report = async (browser, e) => {
  const [page] = browser.contexts().flatMap((c) => c.pages());
  if (page) console.error(`stopped at ${page.url()}:\n${await page.innerText("body").catch(() => "")}`);
  throw e;
};

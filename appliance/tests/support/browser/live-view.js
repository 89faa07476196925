// Opens the Vigil UI in headless Chromium and reports, as one JSON line,
// what a person would see once the live view and the event list are up:
// usage: node live-view.js URL [SCREENSHOT.png]
"use strict";

const { chromium } = require("playwright-core");

const WAIT_MS = 45000;

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.VIGIL_CHROMIUM || "/usr/bin/chromium",
    // No sandbox as root; no background traffic to hosts a box cannot reach.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(url);
    await page.waitForSelector('.camera img[src*="snapshot.jpg"]', { timeout: WAIT_MS });
    await page.waitForSelector('.detection[data-label="person"]', { timeout: WAIT_MS });
    await page.waitForSelector(".event img", { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById("feed").textContent.includes("live"),
      null, { timeout: WAIT_MS });
    // The event list is never polled: a change after this point can only
    // have come through the server-sent event feed.
    const seen = await page.evaluate(() => document.getElementById("events").innerHTML);
    await page.waitForFunction((before) => document.getElementById("events").innerHTML !== before,
      seen, { timeout: WAIT_MS });
    const report = await page.evaluate(() => ({
      cameras: [...document.querySelectorAll(".camera")].map((c) => c.dataset.camera),
      frame: document.querySelector(".camera img")?.getAttribute("src"),
      boxes: [...document.querySelectorAll(".detection text")].map((t) => t.textContent),
      events: [...document.querySelectorAll(".event")].map((e) => ({
        id: Number(e.dataset.event),
        label: e.dataset.label,
        snapshot: e.querySelector("img")?.getAttribute("src") ?? null,
        text: e.textContent,
      })),
      feed: document.getElementById("feed").textContent,
    }));
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify(report));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});

// Walks through the Vigil UI as a person would and reports what each page
// showed, as one JSON line: log in, the live grid with boxes, an event and
// its snapshot, a camera with its zones, the system charts, and a new API
// token (which the report carries so the caller can prove it works).
// usage: node tour.js URL USER PASSWORD [SCREENSHOT_DIR]
"use strict";

const { chromium } = require("playwright-core");

const WAIT_MS = 45000;

async function main() {
  const [url, user, password, shots] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.VIGIL_CHROMIUM || "/usr/bin/chromium",
    // No sandbox as root; no background traffic to hosts a box cannot reach.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const report = {};
  const consoleErrors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(e.message));
    const shot = async (name) => { if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true }); };

    // Nothing is shown before logging in; a wrong password is refused.
    await page.goto(url);
    await page.waitForSelector("#login-form", { state: "visible", timeout: WAIT_MS });
    report.appHiddenBeforeLogin = await page.isHidden("#app");
    await page.fill('#login-form [name="user"]', user);
    await page.fill('#login-form [name="password"]', `${password}-wrong`);
    await page.click('#login-form button[type="submit"]');
    await page.waitForFunction(() => document.getElementById("login-error").textContent !== "", null, { timeout: WAIT_MS });
    report.wrongPassword = await page.textContent("#login-error");
    await shot("login");
    await page.fill('#login-form [name="password"]', password);
    await page.click('#login-form button[type="submit"]');
    await page.waitForSelector("#app", { state: "visible", timeout: WAIT_MS });
    report.whoami = await page.textContent("#whoami");

    // Live: frames with boxes, events with snapshots, the live feed.
    await page.waitForSelector('.camera img[src*="snapshot.jpg"]', { timeout: WAIT_MS });
    await page.waitForSelector('.detection[data-label="person"]', { timeout: WAIT_MS });
    await page.waitForSelector(".event img", { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById("feed").textContent.includes("live"), null, { timeout: WAIT_MS });
    // The event list is never polled: a change after this point can only
    // have come through the server-sent event feed.
    const seen = await page.evaluate(() => document.getElementById("events").innerHTML);
    await page.waitForFunction((before) => document.getElementById("events").innerHTML !== before, seen, { timeout: WAIT_MS });
    report.live = await page.evaluate(() => ({
      cameras: [...document.querySelectorAll(".camera")].map((c) => c.dataset.camera),
      frame: document.querySelector(".camera img")?.getAttribute("src"),
      boxes: [...document.querySelectorAll(".detection text")].map((t) => t.textContent),
      events: [...document.querySelectorAll("#events .event")].length,
      feed: document.getElementById("feed").textContent,
    }));
    await shot("live");

    // Events: the timeline, then one event with its snapshot.
    await page.click('#top nav a[href="#/events"]');
    await page.waitForSelector("#timeline .event img", { timeout: WAIT_MS });
    await page.selectOption('#event-filters [name="camera"]', "street");
    await page.fill('#event-filters [name="label"]', "person");
    await page.click('#event-filters button[type="submit"]');
    await page.waitForSelector("#timeline .event", { timeout: WAIT_MS });
    report.timeline = await page.evaluate(() => [...document.querySelectorAll("#timeline .event")]
      .map((e) => e.dataset.label));
    await shot("events");
    await page.click("#timeline .event:has(img) a");
    await page.waitForSelector("#event-snapshot", { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById("event-snapshot").naturalWidth > 0, null, { timeout: WAIT_MS });
    report.event = await page.evaluate(() => ({
      hash: location.hash,
      title: document.querySelector("#event-detail h2").textContent,
      snapshotWidth: document.getElementById("event-snapshot").naturalWidth,
    }));
    await shot("event");

    // A camera: the MJPEG stream with its zones and lines drawn.
    await page.goto(`${url}#/camera/street`);
    await page.waitForSelector("#camera-stats tr", { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById("camera-stream").naturalWidth > 0, null, { timeout: WAIT_MS });
    report.camera = await page.evaluate(() => ({
      streamWidth: document.getElementById("camera-stream").naturalWidth,
      lines: [...document.querySelectorAll(".zones .line")].map((l) => l.dataset.line),
    }));
    await shot("camera");

    // System: charts fill as stats arrive.
    await page.click('#top nav a[href="#/system"]');
    await page.waitForFunction(() => [...document.querySelectorAll(".chart polyline")]
      .some((p) => p.getAttribute("points").split(" ").length >= 3), null, { timeout: WAIT_MS });
    report.system = await page.evaluate(() => ({
      charts: [...document.querySelectorAll("[data-chart]")].map((f) => f.dataset.chart),
      facts: document.getElementById("system-facts").textContent,
    }));
    await shot("system");

    // Settings: create a token; it is shown once.
    await page.click('#top nav a[href="#/settings"]');
    await page.fill('#token-form [name="name"]', "browser-made");
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector("#new-token .secret", { timeout: WAIT_MS });
    report.token = await page.textContent("#new-token .secret");
    await page.waitForSelector('#tokens td:text("browser-made")', { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById("config").value.includes("[[cameras]]"), null, { timeout: WAIT_MS });
    report.config = await page.inputValue("#config");
    await shot("settings");

    await page.click("#logout");
    await page.waitForSelector("#login-form", { state: "visible", timeout: WAIT_MS });
    report.loggedOut = true;
    report.consoleErrors = consoleErrors;
    console.log(JSON.stringify(report));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});

// The dashboard in a real browser (Debian's chromium, driven by
// playwright-core). Run by tests/dashboard.rs against a live `serve` that
// it seeded; arguments come in the environment:
//   JV_ADDR      host:port of the API
//   JV_TOKEN     the full token;  JV_READONLY  the read-only token
//   JV_SEED      JSON: {job, failed: [ids], pending, workflow}
//   JV_SHOTS     a directory for screenshots (optional)
// Exits non-zero on the first failed check, naming it.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const base = `http://${process.env.JV_ADDR}`;
const token = process.env.JV_TOKEN;
const readonly = process.env.JV_READONLY;
const seed = JSON.parse(process.env.JV_SEED);
const shots = process.env.JV_SHOTS;
const T = 30_000; // generous: a slow shared machine must not flake this

const browser = await chromium.launch({
  executablePath: process.env.JV_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function api(path, opts = {}) {
  const r = await fetch(base + path, {
    ...opts,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(opts.headers ?? {}) },
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function until(what, fn, ms = T) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function login(context, tok) {
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("dialog", (d) => d.accept());
  await page.goto(base + "/");
  await page.locator("#token").fill(tok);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.locator("h1", { hasText: "Overview" }).waitFor();
  page.errors = errors;
  return page;
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: false });
}

const step = async (name, fn) => {
  process.stdout.write(`- ${name} ... `);
  await fn();
  process.stdout.write("ok\n");
};

try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });

  await step("the login form refuses a wrong token and admits the right one", async () => {
    const page = await ctx.newPage();
    page.setDefaultTimeout(T);
    await page.goto(base + "/");
    await page.locator("#token").fill("wrong");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.locator("#login-failed").waitFor({ state: "visible" });
    await page.close();
    const cookies = await ctx.cookies();
    assert.equal(cookies.length, 0, "no cookie for a wrong token");
  });

  const page = await login(ctx, token);
  const [cookie] = await ctx.cookies();
  await step("the session cookie is HttpOnly and SameSite=Strict", async () => {
    assert.equal(cookie.name, "jobvisor_session");
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, "Strict");
  });

  await step("the overview shows nodes, queues, charts and what needs attention", async () => {
    await page.locator("text=live").first().waitFor();
    await page.locator("#chart-throughput svg").waitFor();
    await page.locator("text=Needs attention").waitFor();
    await page.locator(`td >> text=${seed.failed[0].replace(/-/g, "").slice(-8)}`).first().waitFor();
    await shot(page, "overview");
  });

  let running;
  await step("a triggered job's progress bar moves and its log grows live", async () => {
    await page.goto(base + "/#/jobs");
    await page.locator(`tr[data-job="${seed.job}"]`).waitFor();
    await shot(page, "jobs");
    await page.locator(`tr[data-job="${seed.job}"] >> button:has-text("Trigger")`).click();
    running = await until("the triggered run starts", async () => {
      const r = await api(`/v1/executions?job=${seed.job}&status=running&limit=1`);
      return r.body?.[0]?.id;
    });
    await page.goto(`${base}/#/executions/${running}`);
    const now = async () => Number(await page.locator("#progress").getAttribute("aria-valuenow"));
    const lines = async () => page.locator("#logs .line").count();
    const p1 = await until("some progress", async () => (await now()) > 0 && (await now()));
    const l1 = await until("some lines", async () => (await lines()) > 0 && (await lines()));
    await until("more progress", async () => (await now()) > p1);
    await until("new lines arriving", async () => (await lines()) > l1);
    await shot(page, "execution");
  });

  await step("its cancel ends it cancelled", async () => {
    await page.locator("#cancel").click();
    await page.locator("h1 .status.s-cancelled").waitFor();
    const r = await api(`/v1/executions/${running}`);
    assert.equal(r.body.status, "cancelled");
  });

  await step("a pending run is held, shown as held and due, and released", async () => {
    const id = seed.pending;
    await page.goto(`${base}/#/executions/${id}`);
    await page.locator("dt", { hasText: "Due at" }).waitFor();
    await page.locator("#hold").click();
    await page.locator("h1 .status.s-held").waitFor();
    assert.equal((await api(`/v1/executions/${id}`)).body.status, "held");
    await page.locator("#release").click();
    await page.locator("h1 .status.s-pending").waitFor();
    assert.equal((await api(`/v1/executions/${id}`)).body.status, "pending");
  });

  await step("a run's tags and meta are shown and filter the list", async () => {
    const r = await api("/v1/executions", { method: "POST", body: JSON.stringify({ handler: "noop", queue: "held", tags: ["billing"], meta: { customer: "42" } }) });
    assert.equal(r.status, 201);
    await page.goto(`${base}/#/executions/${r.body.id}`);
    await page.locator("dd", { hasText: "manual" }).waitFor();
    await page.locator("#meta a", { hasText: "customer=42" }).click();
    await page.waitForURL(/meta=customer%3A42/);
    const rows = page.locator("#exec-rows tr[data-id]");
    await until("the one run with that meta", async () => (await rows.count()) === 1);
    assert.equal(await rows.first().getAttribute("data-id"), r.body.id);
    await page.goto(`${base}/#/executions/${r.body.id}`);
    await page.locator("#tags a", { hasText: "billing" }).click();
    await page.waitForURL(/tag=billing/);
    await until("the one run with that tag", async () => (await rows.count()) === 1);
  });

  await step("filtering executions and retrying the failed ones in bulk", async () => {
    await page.goto(base + "/#/executions");
    await page.locator("#filters input[value=failed]").check();
    await page.locator("#f-handler").fill("fail");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/status=failed/);
    const rows = page.locator("#exec-rows tr[data-id]");
    await until("the failed rows", async () => (await rows.count()) === seed.failed.length);
    await shot(page, "executions");
    await page.locator("#bulk-retry").click();
    await until("each failed one retried", async () => {
      const all = await Promise.all(seed.failed.map((id) => api(`/v1/executions/${id}`)));
      return all.every((r) => r.body.next_id);
    });
  });

  await step("a cron job is created with a live preview, edited, triggered and deleted", async () => {
    await page.goto(base + "/#/jobs");
    await page.locator("#new-job").click();
    await page.locator("#job-form").waitFor();
    await page.locator("#j-name").fill("browser-job");
    await page.locator("#j-handler").selectOption("echo");
    await page.locator("#j-kind").selectOption("cron");
    await page.locator("#j-tz").fill("Europe/Berlin");
    // A bad schedule: the preview's error, inline.
    await page.locator("#j-cron").fill("61 * * * *");
    await until("the preview's error", async () => (await page.locator("#preview-error").textContent()).length > 0);
    await page.locator("#j-cron").fill("30 9 * * 1-5");
    await until("five runs previewed", async () => (await page.locator("#preview li").count()) === 5 && (await page.locator("#preview-error").textContent()) === "");
    const first = await page.locator("#preview li").first().textContent();
    assert.match(first, /9:30|09:30/, "in the job's zone");
    assert.match(first, /T0[78]:30:00Z/, "and in UTC");
    await shot(page, "job-form");
    await page.locator("#j-description").fill("made in a browser");
    await page.locator("#j-tags").fill("ui,test");
    await page.locator("#job-save").click();
    await page.waitForURL(/#\/jobs\/browser-job$/);
    await page.locator("#job-details", { hasText: "made in a browser" }).waitFor();
    let j = (await api("/v1/jobs/browser-job")).body;
    assert.deepEqual([j.schedule.expr, j.schedule.tz, j.tags], ["30 9 * * 1-5", "Europe/Berlin", ["ui", "test"]]);
    await page.locator("#job-edit").click();
    await page.locator("#j-cron").fill("0 18 * * *");
    await until("the edited preview", async () => /T17:00:00Z/.test(await page.locator("#preview li").first().textContent()));
    await page.locator("#job-save").click();
    await page.waitForURL(/#\/jobs\/browser-job$/);
    j = (await api("/v1/jobs/browser-job")).body;
    assert.equal(j.schedule.expr, "0 18 * * *");
    assert.equal(j.description, "made in a browser", "what the form does not change stays");
    await page.locator("#job-trigger").click();
    await page.waitForURL(/#\/executions\/[0-9a-f-]{36}$/);
    const ran = page.url().split("/").pop();
    await until("the triggered run ends", async () => (await api(`/v1/executions/${ran}`)).body.status === "succeeded");
    await page.goto(`${base}/#/jobs/browser-job`);
    await page.locator("#job-delete").click();
    await page.waitForURL(/#\/jobs$/);
    assert.equal((await api("/v1/jobs/browser-job")).status, 404);
    assert.equal((await api(`/v1/executions/${ran}`)).status, 200, "its history stays");
  });

  await step("a workflow's graph shows its steps' statuses", async () => {
    await page.goto(base + "/#/workflows");
    await shot(page, "workflows");
    await page.goto(`${base}/#/workflows/${seed.workflow}`);
    await page.locator('#graph g[data-step="fetch"][data-status="succeeded"]').waitFor();
    await page.locator('#graph g[data-step="report"]').waitFor();
    await shot(page, "workflow");
  });

  await step("the handlers page shows limits and isolation", async () => {
    await page.goto(base + "/#/handlers");
    await page.locator("td >> text=echo").first().waitFor();
    await shot(page, "handlers");
  });

  await step("an action without the session's CSRF token is refused", async () => {
    const r = await page.evaluate(async (id) => {
      const res = await fetch(`/v1/executions/${id}/cancel`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      return res.status;
    }, seed.pending);
    assert.equal(r, 403);
  });
  assert.deepEqual(page.errors, [], "no script error on any page");

  await step("a read-only login sees everything but its cancel is refused", async () => {
    const ro = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await login(ro, readonly);
    await p.locator("#role", { hasText: "read-only" }).waitFor();
    await p.goto(`${base}/#/executions/${seed.pending}`);
    await p.locator("#cancel").click();
    await p.locator(".toast .bad", { hasText: "read-only" }).waitFor();
    const r = await api(`/v1/executions/${seed.pending}`);
    assert.equal(r.body.status, "pending", "the read-only cancel changed nothing");
    await p.goto(base + "/#/executions");
    await p.locator("#exec-rows tr[data-id]").first().waitFor();
    assert.deepEqual(p.errors, []);
    await ro.close();
  });

  await step("it works at 390 px, in dark mode, by keyboard", async () => {
    const small = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: "dark" });
    await small.addCookies([cookie]);
    const p = await small.newPage();
    p.setDefaultTimeout(T);
    await p.goto(base + "/");
    await p.locator("h1", { hasText: "Overview" }).waitFor();
    const wide = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 390 + 1, `no sideways scroll of the page (${wide}px)`);
    const bg = await p.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bg, "rgb(247, 248, 250)", "dark colours");
    await shot(p, "overview-390-dark");
    // Keyboard: Tab reaches the skip link, the brand, then the pages.
    await p.keyboard.press("Tab");
    assert.equal(await p.evaluate(() => document.activeElement.className), "skip");
    for (let i = 0; i < 3; i++) await p.keyboard.press("Tab");
    assert.equal(await p.evaluate(() => document.activeElement.textContent), "Executions");
    await p.keyboard.press("Enter");
    await p.locator("h1", { hasText: "Executions" }).waitFor();
    await small.close();
  });

  await ctx.close();
  console.log("dashboard: all checks passed");
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

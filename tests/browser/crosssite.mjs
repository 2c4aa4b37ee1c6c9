// Hostile pages in a real browser (Debian's chromium, driven by
// playwright-core), against a live `serve` without a token. Run by
// tests/security.rs, which then checks that nothing was created or paused.
//   JV_ADDR      host:port of the API (on 127.0.0.1)
//   JV_CHROMIUM  the browser
// Each attack's requests must reach the service and be refused there: the
// browser's own view of each response (its status) is checked, so a request
// that never left the browser cannot pass for a refused one.
//
// 1. A page on another origin (a second port) posts with `no-cors` fetch
//    (a Blob body: no JSON type, no preflight) and with plain HTML forms,
//    to create an execution and to pause a queue.
// 2. DNS rebinding: a page from `rebound.test` on the service's own port
//    (its name first answered by the attacker, here by the test) then sends
//    same-origin requests, which the browser sends to 127.0.0.1.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import http from "node:http";

const addr = process.env.JV_ADDR;
const port = addr.split(":").pop();
const target = `http://${addr}`;
const T = 30_000;

const evil = `<!doctype html><title>evil</title>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="f1" method="POST" action="${target}/v1/executions" enctype="text/plain" target="sink1">
  <input name='{"handler":"noop","x":"' value='"}'></form>
<form id="f2" method="POST" action="${target}/v1/queues/mail/pause" target="sink2"></form>
<script>
(async () => {
  const sent = [];
  sent.push(fetch("${target}/v1/executions", { method: "POST", mode: "no-cors",
    body: new Blob(['{"handler":"noop"}']) }).catch(() => {}));
  sent.push(fetch("${target}/v1/executions", { method: "POST", mode: "no-cors",
    headers: { "Content-Type": "application/json" }, body: '{"handler":"noop"}' }).catch(() => {}));
  sent.push(fetch("${target}/v1/queues/mail/pause", { method: "POST", mode: "no-cors" }).catch(() => {}));
  sent.push(fetch("${target}/v1/executions", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: '{"handler":"noop"}' }).catch(() => {}));
  await Promise.all(sent);
  const loaded = (name) => new Promise((r) => document.querySelector('iframe[name="' + name + '"]').addEventListener("load", r, { once: true }));
  const a = loaded("sink1"), b = loaded("sink2");
  document.getElementById("f1").submit();
  document.getElementById("f2").submit();
  await Promise.all([a, b]);
  document.title = "done";
})();
</script>`;

const rebound = `<!doctype html><title>rebound</title><script>
(async () => {
 try {
  // Same origin now: a JSON body needs no preflight, and a read is readable.
  const made = await fetch("/v1/executions", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: '{"handler":"noop"}' });
  const read = await fetch("/v1/handlers");
  const paused = await fetch("/v1/queues/mail/pause", { method: "POST",
    headers: { "Content-Type": "application/json" } });
  window.results = [made.status, read.status, paused.status, await read.text()];
 } catch (e) { window.results = ["error", String(e)]; }
  document.title = "done";
})();
</script>`;

const server = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html" });
  res.end(evil);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const evilPort = server.address().port;

const browser = await chromium.launch({
  executablePath: process.env.JV_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP rebound.test 127.0.0.1",
    // Chromium's own guard (Private/Local Network Access) blocks a public
    // page's requests to loopback; Firefox and Safari have none. Off here,
    // so that what stops the attack is jobvisor's own check.
    "--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,LocalNetworkAccessChecks"],
});

try {
  // 1. Another origin.
  const page = await browser.newPage();
  page.setDefaultTimeout(T);
  const seen = [];
  page.on("response", (r) => {
    if (r.url().startsWith(target)) seen.push([r.request().method(), new URL(r.url()).pathname, r.status()]);
  });
  page.on("requestfailed", (r) => {
    if (r.url().startsWith(target)) seen.push([r.method(), new URL(r.url()).pathname, "failed: " + r.failure()?.errorText]);
  });
  await page.goto(`http://localhost:${evilPort}/`);
  await page.waitForFunction(() => document.title === "done", null, { timeout: T });
  console.log("cross-origin responses:", JSON.stringify(seen));
  // The browser reports some of them twice: the service's answer, then the
  // request "failed" (an opaque answer blocked, a form's frame replaced).
  // What counts is that every answer the service gave was a refusal, and
  // that the two forms and three no-cors fetches were answered.
  const answered = seen.filter(([m, , status]) => m === "POST" && typeof status === "number");
  assert.ok(answered.length >= 5, `the posts reached the service: ${JSON.stringify(seen)}`);
  for (const [m, path, status] of seen.filter(([, , s]) => typeof s === "number")) {
    assert.ok(status === 403 || status === 415 || status === 405,
      `${m} ${path} was refused, not answered ${status}`);
  }
  await page.close();

  // 2. DNS rebinding: the first answer for rebound.test is the attacker's
  // page (served here by the test), later ones are 127.0.0.1.
  const page2 = await browser.newPage();
  page2.setDefaultTimeout(T);
  await page2.route(`http://rebound.test:${port}/evil.html`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: rebound }));
  await page2.goto(`http://rebound.test:${port}/evil.html`);
  await page2.waitForFunction(() => document.title === "done", null, { timeout: T });
  const [made, read, paused, text] = await page2.evaluate(() => window.results);
  console.log("rebound responses:", made, read, paused, text);
  assert.equal(made, 403);
  assert.equal(read, 403);
  assert.equal(paused, 403);
  assert.ok(text.includes("host_not_allowed"), text);
  assert.ok(!text.includes('"name"'), "no handler was read");
  console.log("all checks passed");
} finally {
  await browser.close();
  server.close();
}

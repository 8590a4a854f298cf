// GraphiQL in a real browser: Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/graphiql.mjs <graphiql-url> <expected-text>
//
// Loads GraphiQL with every request to a non-loopback address blocked (and
// recorded), types a query in the editor, runs it with Ctrl-Enter, reads the
// result pane and opens the docs explorer. Exits 0 when the result contains
// <expected-text>, no request left loopback, and the page logged no CSP
// violation, console error or uncaught exception; 1 otherwise, after writing
// a screenshot to $BROWSER_FAILURE_SCREENSHOT (default
// target/browser-failure.png in the repository). $BROWSER_SCREENSHOT, when
// set, gets a screenshot of the final page either way.
//
// tests/it/graphiql.rs runs it against a gateway on a loopback port; the
// browser is /usr/bin/chromium (`apt-get install chromium`, as tests/run.sh
// does), never a downloaded one.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const OPERATION = 'BrowserTest';
const QUERY = `query ${OPERATION} { sessions(state: HISTORY, first: 3) { nodes { sessionId target status } } }`;
const CHROMIUM = '/usr/bin/chromium';
const TIMEOUT_MS = 60_000;

const [url, expected] = process.argv.slice(2);
if (!url || !expected) {
  console.error('usage: node tests/browser/graphiql.mjs <graphiql-url> <expected-text>');
  process.exit(2);
}
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const failureShot =
  process.env.BROWSER_FAILURE_SCREENSHOT || join(repo, 'target', 'browser-failure.png');

function isLoopback(address) {
  let host;
  try {
    host = new URL(address).hostname;
  } catch {
    return false;
  }
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

// What the page did that it must not.
const offLoopback = new Set();
const cspViolations = [];
const consoleErrors = [];
const pageErrors = [];
const badResponses = [];

const userDataDir = mkdtempSync(join(tmpdir(), 'graphiql-chromium-'));
let context;
let page;

async function screenshot(path) {
  if (!page) return;
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true }).catch((e) => console.error(`screenshot: ${e}`));
}

// Everything seen so far that fails the test.
function problems() {
  return [
    offLoopback.size && `requests left loopback: ${[...offLoopback].join(', ')}`,
    cspViolations.length && `CSP violations: ${JSON.stringify(cspViolations)}`,
    consoleErrors.length && `console errors: ${consoleErrors.join(' | ')}`,
    pageErrors.length && `uncaught exceptions: ${pageErrors.join(' | ')}`,
    badResponses.length && `failed responses: ${badResponses.join(', ')}`,
  ].filter(Boolean);
}

// Ends the run: passes when `failure` is empty and nothing bad was seen.
async function finish(failure) {
  clearTimeout(watchdog);
  const failures = [failure, ...problems()].filter(Boolean);
  if (process.env.BROWSER_SCREENSHOT) await screenshot(process.env.BROWSER_SCREENSHOT);
  if (failures.length) {
    await screenshot(failureShot);
    for (const f of failures) console.error(`FAIL: ${f}`);
    console.error(`screenshot: ${failureShot}`);
  }
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(failures.length ? 1 : 0);
}

const watchdog = setTimeout(() => finish(`timed out after ${TIMEOUT_MS} ms`), TIMEOUT_MS);

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless',
      '--no-sandbox', // we run as root
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });

  // Everything the page asks for passes here: loopback goes on, the rest is
  // recorded and refused.
  await context.route('**/*', (route) => {
    const requested = route.request().url();
    if (isLoopback(requested)) return route.continue();
    offLoopback.add(requested);
    return route.abort('blockedbyclient');
  });
  await context.routeWebSocket(/.*/, (ws) => {
    if (isLoopback(ws.url())) return ws.connectToServer();
    offLoopback.add(ws.url());
    return ws.close();
  });
  context.on('request', (request) => {
    const requested = request.url();
    if (!/^(data|blob|about):/.test(requested) && !isLoopback(requested)) offLoopback.add(requested);
  });
  await context.exposeBinding('__reportCspViolation', (_source, violation) => {
    cspViolations.push(violation);
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__reportCspViolation({
        directive: e.violatedDirective,
        blocked: e.blockedURI,
        source: `${e.sourceFile}:${e.lineNumber}`,
        sample: e.sample,
      });
    });
  });

  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
    else if (message.type() === 'warning') console.log(`(console warning) ${message.text()}`);
  });
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('response', (response) => {
    if (response.status() >= 400) badResponses.push(`${response.status()} ${response.url()}`);
  });

  const started = Date.now();
  const answer = await page.goto(url, { waitUntil: 'load' });
  if (!answer || answer.status() !== 200) {
    await finish(`GET ${url}: ${answer?.status()}`);
  }
  const csp = answer.headers()['content-security-policy'] || '';
  if (!csp.includes("default-src 'self'")) await finish(`no strict Content-Security-Policy: "${csp}"`);

  // Type the query as a person would: focus the editor, replace its text.
  const editor = page.locator('.graphiql-query-editor .CodeMirror');
  await editor.waitFor({ timeout: 20_000 });
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type(QUERY);
  await page.keyboard.press('Escape'); // closes an autocompletion list, if open
  const typed = await page.evaluate(
    () => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue(),
  );
  if (typed.replace(/\s+/g, ' ').trim() !== QUERY) {
    await finish(`the editor holds ${JSON.stringify(typed)}, not the typed query`);
  }

  // GraphiQL learns the operation name from the editor after a short
  // debounce, and runs the operation it knows: wait until the tab says so.
  await page.locator('.graphiql-tab', { hasText: OPERATION }).waitFor({ timeout: 10_000 });
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(
    () => {
      const response = document.querySelector('.graphiql-response .CodeMirror');
      return response && /"(data|errors)"/.test(response.CodeMirror.getValue());
    },
    null,
    { timeout: 20_000 },
  );
  // What the result pane shows (its lines as rendered), and its whole text.
  const shown = await page.locator('.graphiql-response .CodeMirror-code').innerText();
  const result = await page.evaluate(
    () => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue(),
  );
  console.log(`result pane:\n${result}`);
  if (!shown.includes(expected) || !result.includes(expected)) {
    await finish(`the result pane does not show ${expected}`);
  }
  if (result.includes('"errors"')) await finish('the query answered errors');

  // The docs explorer reads the schema GraphiQL introspected: Query, then
  // its field `sessions`, whose type it names.
  await page.getByRole('button', { name: /documentation explorer/i }).click();
  const docs = page.locator('.graphiql-doc-explorer');
  await docs.locator('.graphiql-doc-explorer-type-name', { hasText: /^Query$/ }).first().click();
  await docs.locator('.graphiql-doc-explorer-field-name', { hasText: /^sessions$/ }).first().click();
  await docs.getByText('SessionConnection').first().waitFor({ timeout: 10_000 });

  // History remembers the query that ran.
  await page.getByRole('button', { name: /history/i }).first().click();
  await page.locator('.graphiql-history-item', { hasText: OPERATION }).first().waitFor({ timeout: 10_000 });

  // A tooltip, the headers editor, and GraphiQL's dialogs (they inject styles: the CSP must allow them).
  await page.getByRole('button', { name: /prettify query/i }).hover();
  await page.getByRole('tooltip').first().waitFor({ timeout: 10_000 });
  await page.getByRole('button', { name: 'Headers', exact: true }).click();
  await page.locator('.graphiql-editor-tool .CodeMirror').last().waitFor({ timeout: 10_000 });
  for (const dialog of ['Open short keys dialog', 'Open settings dialog']) {
    await page.getByRole('button', { name: dialog }).click();
    await page.getByRole('dialog').waitFor({ timeout: 10_000 });
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached', timeout: 10_000 });
  }
  console.log(`GraphiQL loaded, ran the query and browsed the docs in ${Date.now() - started} ms`);

  await finish();
} catch (error) {
  await finish(String(error));
}

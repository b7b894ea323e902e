// Drive the demo page in headless Chromium, as a user would: pick the two images, press Match, and save the
// disparity the page computed as PFM. Used by the repository's tests; also handy by hand:
//
//   node examples/web/test/drive.mjs --url http://127.0.0.1:8000/ --left im0.png --right im1.png --out d.pfm
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import puppeteer from 'puppeteer-core';

const { values } = parseArgs({
  options: {
    url: { type: 'string' }, left: { type: 'string' }, right: { type: 'string' }, out: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' }, timeout: { type: 'string', default: '600' },
  },
});
const timeout = 1000 * Number(values.timeout);
const profile = mkdtempSync(join(tmpdir(), 'stereodeploy-chromium-'));
const browser = await puppeteer.launch({
  executablePath: values.chromium,
  headless: true,
  userDataDir: profile,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage'],
  protocolTimeout: timeout,
});
try {
  const page = await browser.newPage();
  const log = [];
  page.on('console', (m) => log.push(m.text()));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  await page.goto(values.url, { waitUntil: 'load', timeout });
  await page.waitForFunction('window.stereodeployReady === true', { timeout });
  const loaded = await page.$eval('#status', (e) => e.textContent);
  if (!loaded.startsWith('model loaded')) throw new Error(`page: ${loaded}; ${log.join(' | ')}`);
  await (await page.$('#left')).uploadFile(values.left);
  await (await page.$('#right')).uploadFile(values.right);
  await page.waitForFunction("!document.getElementById('run').disabled", { timeout });
  await page.click('#run');
  await page.waitForFunction('window.stereodeployResult || window.stereodeployError', { timeout, polling: 500 });
  const error = await page.evaluate('window.stereodeployError');
  if (error) throw new Error(`page: ${error}`);
  const r = await page.evaluate(() => {
    const s = window.stereodeployResult;
    return { height: s.height, width: s.width, seconds: s.seconds, data: Array.from(s.disparity),
             isolated: self.crossOriginIsolated, status: document.getElementById('status').textContent };
  });
  const header = Buffer.from(`Pf\n${r.width} ${r.height}\n-1\n`, 'ascii');
  const body = Buffer.alloc(4 * r.width * r.height);
  for (let y = 0; y < r.height; y++) {
    for (let x = 0; x < r.width; x++) {
      const v = r.data[y * r.width + x];
      body.writeFloatLE(Number.isFinite(v) ? v : Infinity, 4 * ((r.height - 1 - y) * r.width + x));
    }
  }
  writeFileSync(values.out, Buffer.concat([header, body]));
  console.log(JSON.stringify({ seconds: r.seconds, isolated: r.isolated, status: r.status }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}

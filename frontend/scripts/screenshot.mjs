// Render the QueryEditor in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), type into it like a person, check what it shows, and save screenshots
// to screenshots/query-editor*.png for people to look at: as typed, invalid, with template
// variables, with alias, unit and Latest value mode, and each kind (generator, source,
// published, their pickers open) in Grafana's dark and light themes.
import { build } from 'esbuild';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function check(condition, message) {
  if (!condition) {
    throw new Error(`browser check failed: ${message}`);
  }
}

const bundle = await build({
  entryPoints: { app: join(root, 'scripts/harness.tsx') },
  bundle: true,
  write: false,
  outdir: join(root, '.harness'), // nothing is written; CSS the components import becomes app.css
  format: 'iife',
  platform: 'browser',
  jsx: 'transform',
  define: { 'process.env.NODE_ENV': '"production"' },
  loader: { '.svg': 'text', '.woff': 'empty', '.woff2': 'empty', '.ttf': 'empty', '.png': 'empty', '.gif': 'empty' },
  logLevel: 'error',
});
const page = `<!doctype html><html><head><meta charset="utf-8"><title>zmqstream</title>
<link rel="stylesheet" href="/app.css"></head>
<body style="margin:0"><div id="root"></div><script src="/app.js"></script></body></html>`;
const files = Object.fromEntries(bundle.outputFiles.map((f) => [f.path.endsWith('.css') ? '/app.css' : '/app.js', f.text]));
const server = createServer((request, response) => {
  const path = (request.url ?? '').split('?')[0];
  const body = path === '/' ? page : files[path];
  const type = path === '/' ? 'text/html' : path === '/app.css' ? 'text/css' : 'text/javascript';
  response.writeHead(body === undefined ? 404 : 200, { 'content-type': type });
  response.end(body ?? 'not found');
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/`;
await mkdir(join(root, 'screenshots'), { recursive: true });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  // playwright starts Chromium with a fresh, empty profile of its own every launch
});
try {
  const tab = await browser.newPage({ viewport: { width: 1100, height: 460 } });
  const errors = [];
  tab.on('pageerror', (error) => errors.push(String(error)));
  await tab.goto(url);
  await tab.getByLabel('Lower Limit').waitFor({ timeout: 15_000 });
  check((await tab.getByTestId('zmqstream-path').textContent()).includes('custom-10-20-100'), 'initial path');

  const settle = async () => {
    await tab.mouse.move(1090, 450); // off every control: no hover tooltip over the stream path
    await tab.waitForTimeout(300);
  };
  await tab.getByLabel('Lower Limit').fill('-5');
  await tab.getByLabel('Series', { exact: true }).fill('3');
  await tab.locator('input[type=radio][id^="option-random_walk"]').check({ force: true });
  check((await tab.getByTestId('zmqstream-path').textContent()).includes('custom--5-20-100-random_walk-3'), 'path follows typing');
  await settle();
  check(await tab.getByTestId('zmqstream-path').isVisible(), 'stream path visible');
  await tab.screenshot({ path: join(root, 'screenshots', 'query-editor.png') });

  await tab.getByLabel('Upper Limit').fill('-10');
  await tab.getByLabel('Tick interval (ms)').fill('0');
  await tab.getByLabel('Series', { exact: true }).click();
  const alert = await tab.getByTestId('zmqstream-errors').textContent();
  check(alert.includes('Upper limit must be above the lower limit') && alert.includes('Tick interval must be between'), `errors shown: ${alert}`);
  await settle();
  await tab.screenshot({ path: join(root, 'screenshots', 'query-editor-invalid.png') });

  const open = async (query) => {
    await tab.goto(`${url}?query=${encodeURIComponent(JSON.stringify({ refId: 'A', ...query }))}`);
    await tab.getByLabel('Lower Limit').waitFor({ timeout: 15_000 });
    await settle();
  };
  await open({ lowerLimit: '$lower', upperLimit: '${upper}', tickInterval: '$tick', generator: 'sine', series: 2 });
  const resolved = await tab.getByTestId('zmqstream-path').textContent();
  check(resolved.includes('custom--5-5-250-sine-2'), `variables resolved in the path: ${resolved}`);
  await tab.screenshot({ path: join(root, 'screenshots', 'query-editor-variables.png') });

  await open({ lowerLimit: 15, upperLimit: 30, tickInterval: 1000, alias: 'room {{series}}', unit: 'celsius', series: 2, generator: 'random_walk', mode: 'latest' });
  const shown = await tab.getByTestId('zmqstream-path').textContent();
  check(shown.includes('legend “room {{series}}”') && shown.includes('unit celsius'), `display options shown: ${shown}`);
  await tab.screenshot({ path: join(root, 'screenshots', 'query-editor-display.png') });

  // Each kind in Grafana's dark and light themes, its picker open on what the backend lists.
  const KINDS = {
    generator: { query: { lowerLimit: 0, upperLimit: 100, tickInterval: 500, generator: 'sine', series: 2, unit: 'celsius' }, picker: undefined, path: 'custom-0-100-500-sine-2' },
    source: { query: { kind: 'source', source: 'host', tickInterval: 1000, unit: 'percent' }, picker: 'Source', path: 'source-host-1000', listed: 'meter', fields: 'cpu (number)' },
    published: { query: { kind: 'published', channel: 'lab.door', labels: ['room'], logs: true }, picker: 'Channel', path: 'pub-lab.door', listed: 'deploys', fields: 'room (string)' },
  };
  const shots = [];
  for (const theme of ['dark', 'light']) {
    for (const [kind, { query, picker, path, listed, fields }] of Object.entries(KINDS)) {
      await tab.goto(`${url}?theme=${theme}&query=${encodeURIComponent(JSON.stringify({ refId: 'A', ...query }))}`);
      await tab.getByText('zmqstream query editor').waitFor({ timeout: 15_000 });
      await tab.getByText('Tick interval (ms)').first().waitFor({ timeout: 15_000, state: kind === 'published' ? 'detached' : 'visible' });
      const shownPath = await tab.getByTestId('zmqstream-path').textContent();
      check(shownPath.includes(path), `${kind} path: ${shownPath}`);
      if (fields) {
        check((await tab.getByTestId('zmqstream-fields').textContent()).includes(fields), `${kind} fields shown`);
      }
      await settle();
      const name = `query-editor-${kind}-${theme}.png`;
      await tab.screenshot({ path: join(root, 'screenshots', name) });
      shots.push(name);
      if (picker) {
        await tab.locator(`#zmqstream-${picker === 'Source' ? 'source' : 'channel'}`).click();
        await tab.getByRole('option', { name: new RegExp(listed) }).waitFor({ timeout: 5_000 });
        const open = `query-editor-${kind}-picker-${theme}.png`;
        await tab.screenshot({ path: join(root, 'screenshots', open) });
        shots.push(open);
      }
    }
  }
  check(errors.length === 0, `page errors: ${errors.join('; ')}`);
  console.log(`browser check passed: screenshots/query-editor{,-invalid,-variables,-display}.png, ${shots.join(', ')}`);
} finally {
  await browser.close();
  server.close();
}

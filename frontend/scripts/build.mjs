// Build dist/module.js: the AMD module Grafana loads, with Grafana's shared packages external.
//
// esbuild bundles our sources to CommonJS; a small wrapper turns that into
// `define([deps], factory)`, the shape create-plugin's webpack output has. Grafana's
// SystemJS hands the factory its own copies of react, @grafana/*, rxjs.
import { build } from 'esbuild';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

/** Packages Grafana shares with plugins at run time (create-plugin's externals); tests read the same list. */
export const SHARED = JSON.parse(await readFile(join(root, 'scripts/shared-externals.json'), 'utf8'));

/** Wrap a CommonJS bundle as an AMD module whose dependencies are the externals it requires. */
export function toAmd(code) {
  const required = [...new Set([...code.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]))];
  const unexpected = required.filter((name) => !SHARED.includes(name));
  if (unexpected.length > 0) {
    throw new Error(`module.js would require non-shared packages: ${unexpected.join(', ')}`);
  }
  const params = required.map((_, i) => `__dep${i}`);
  const table = required.map((name, i) => `${JSON.stringify(name)}: __dep${i}`).join(', ');
  return [
    `define(${JSON.stringify(required)}, function (${params.join(', ')}) {`,
    `var __shared = {${table}};`,
    'var require = function (name) { return __shared[name]; };',
    'var module = { exports: {} }, exports = module.exports;',
    code,
    'return module.exports;',
    '});',
    '',
  ].join('\n');
}

async function main() {
  await rm(dist, { recursive: true, force: true });
  const result = await build({
    entryPoints: [join(root, 'src/module.ts')],
    bundle: true,
    write: false,
    format: 'cjs',
    platform: 'browser',
    target: 'es2020',
    jsx: 'transform',
    external: SHARED,
    minify: true,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
  });
  await mkdir(join(dist, 'img'), { recursive: true });
  await writeFile(join(dist, 'module.js'), toAmd(result.outputFiles[0].text));
  await copyFile(join(root, 'src/img/logo.svg'), join(dist, 'img/logo.svg'));
  const size = (await readFile(join(dist, 'module.js'))).length;
  console.log(`dist/module.js ${(size / 1024).toFixed(1)} KiB`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main();
}

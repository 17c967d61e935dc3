// Brotli copies of the widget's files, for the gateway to serve to browsers that accept
// them (it makes gzip itself at start; Python's standard library has no brotli).
//
//   node services/gateway/confab_gateway/static/widget/compress.mjs
//
// Writes brotli/<path>.br (quality 11) for every compressible file under v1/ that it
// makes smaller, and brotli/manifest.json: each copy's source SHA-256. The gateway uses a
// copy only while its source is unchanged, so a stale one is never served (only not
// compressed as well); tests/browser/test_static.py checks that none is stale. The loader
// (confab-widget.js) is left out: the gateway writes its build into it when it starts.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, 'v1');
const target = join(here, 'brotli');
const COMPRESSIBLE = /\.(js|mjs|css|json|svg|txt|ts)$/;
const SKIP = new Set(['confab-widget.js']);

function* files(folder) {
  for (const name of readdirSync(folder).sort()) {
    if (name.startsWith('.')) continue;
    const path = join(folder, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}

rmSync(target, { recursive: true, force: true });
const manifest = {};
let before = 0;
let after = 0;
for (const path of files(source)) {
  const name = relative(source, path).split(sep).join('/');
  if (SKIP.has(name) || !COMPRESSIBLE.test(name)) continue;
  const body = readFileSync(path);
  const compressed = brotliCompressSync(body, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
    },
  });
  if (compressed.length >= body.length) continue;
  mkdirSync(dirname(join(target, name)), { recursive: true });
  writeFileSync(join(target, `${name}.br`), compressed);
  manifest[name] = createHash('sha256').update(body).digest('hex');
  before += body.length;
  after += compressed.length;
}
writeFileSync(join(target, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`${Object.keys(manifest).length} files: ${before} bytes, ${after} with brotli`);
